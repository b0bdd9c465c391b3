"""What Ray Serve costs on this machine: cluster start, deploy, and each request's time through the ingress and a
replica against the same request sent straight to an `idefics2 serve` (embedded model, CPU, one replica).

PYTHONPATH=python IDEFICS2_PYTHON=<dev python> <dev python> scripts/serve-ray/measure_overhead.py [--requests 40]
  [--model DIR_OR_ID] [--num-gpus-per-replica 1]
Prints a Markdown table (medians, and the 90th percentile for the per-request rows).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import httpx

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
STREAM = {**CHAT, "max_tokens": 64, "min_tokens": 64, "stream": True}


def _times(run: Callable[[], object], count: int) -> list[float]:
    run()  # warm
    found = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        found.append((time.perf_counter() - started) * 1000)
    return found


def _row(name: str, direct: list[float], ray: list[float]) -> str:
    def show(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} / {statistics.quantiles(values, n=10)[-1]:.1f}"

    extra = statistics.median(ray) - statistics.median(direct)
    return f"| {name} | {show(direct)} | {show(ray)} | +{extra:.1f} |"


def _probes(base: str, client: httpx.Client) -> dict[str, Callable[[], object]]:
    def stream() -> None:
        with client.stream("POST", f"{base}/v1/chat/completions", json=STREAM) as response:
            for _ in response.iter_bytes():
                pass

    return {
        "`GET /v1/models`": lambda: client.get(f"{base}/v1/models").raise_for_status(),
        "chat completion, 1 token": lambda: client.post(f"{base}/v1/chat/completions", json=CHAT).raise_for_status(),
        "streamed, 64 tokens": stream,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--num-gpus-per-replica", type=float, default=0.0)
    arguments = parser.parse_args()
    count = arguments.requests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ray
        from idefics2_serve_ray.app import build_app
        from idefics2_serve_ray.config import Idefics2RayConfig
        from idefics2_serve_ray.idefics2_process import Idefics2Process
        from ray import serve

    config = Idefics2RayConfig(replicas=1, model=arguments.model, num_gpus_per_replica=arguments.num_gpus_per_replica)
    started = time.perf_counter()
    direct_server = Idefics2Process(config.serve_command(), startup_timeout_s=300)
    direct_start = time.perf_counter() - started

    started = time.perf_counter()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, _temp_dir=temp_dir)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    cluster_start = time.perf_counter() - started
    started = time.perf_counter()
    serve.run(build_app(config), name="measure", route_prefix="/")
    deploy = time.perf_counter() - started
    try:
        with httpx.Client(timeout=60) as client:
            direct = {name: _times(run, count) for name, run in _probes(direct_server.url, client).items()}
            through_ray = {name: _times(run, count) for name, run in _probes("http://127.0.0.1:8765", client).items()}
    finally:
        serve.shutdown()
        ray.shutdown()
        direct_server.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)

    print("| step | `idefics2 serve` alone | on Ray Serve | |\n|---|---|---|---|")
    print(f"| start (s) | {direct_start:.1f} | cluster {cluster_start:.1f} + deploy {deploy:.1f} | |")
    print("| **per request (ms), median / p90** | | | **added** |")
    for name, times in direct.items():
        print(_row(name, times, through_ray[name]))
    print(f"\n{count} sequential requests each; Python {sys.version.split()[0]}, Ray {ray.__version__}.")


if __name__ == "__main__":
    main()
