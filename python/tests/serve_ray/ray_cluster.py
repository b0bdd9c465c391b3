"""One local Ray cluster (CPU, small object store, no dashboard) with the deployment on it, shared by the suite.

Not a conftest.py: a second one would shadow python/tests/conftest.py, which other folders import as `conftest`.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

APP_NAME = "idefics2-test"
REPLICAS = 2


@dataclass(frozen=True)
class RayDeployment:
    base_url: str
    cluster_start_s: float
    deploy_s: float


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_deployment() -> Iterator[RayDeployment]:
    """Starts the cluster and the deployment, yields where it listens, then shuts both down."""
    with warnings.catch_warnings():
        # Ray's own modules warn on import (pydantic deprecations), which this suite's warning filter would fail.
        warnings.simplefilter("ignore")
        import ray
        from ray import serve

        from idefics2_serve_ray.app import build_app
        from idefics2_serve_ray.config import Idefics2RayConfig

    # The replicas' `idefics2 serve` run their worker on this interpreter (Ray's workers inherit the variable).
    previous = os.environ.get("IDEFICS2_PYTHON")
    os.environ["IDEFICS2_PYTHON"] = sys.executable
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    started = time.monotonic()
    # Four logical CPUs on two cores: room for a replacement replica while the one it replaces is still going.
    ray.init(
        num_cpus=4,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cluster_start_s = time.monotonic() - started
        config = Idefics2RayConfig(replicas=REPLICAS, num_cpus_per_replica=1, health_check_period_s=1)
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        deployed = time.monotonic() - started - cluster_start_s
        yield RayDeployment(f"http://127.0.0.1:{port}/v1", cluster_start_s, deployed)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if previous is None:
            os.environ.pop("IDEFICS2_PYTHON", None)
        else:
            os.environ["IDEFICS2_PYTHON"] = previous
