"""The Ray Serve application: an ingress deployment in front of replicas that each own an `idefics2 serve`."""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application

from .config import Idefics2RayConfig
from .ingress import Idefics2Ingress
from .replica import Idefics2Replica

# A replica's graceful stop lets `idefics2 serve` finish what it holds (its own bound is 10 s).
GRACEFUL_SHUTDOWN_S = 20.0


def build_app(config: Idefics2RayConfig) -> Application:
    """The application to pass to `serve.run` (route prefix "/": clients use `http://HOST:PORT/v1`)."""
    scaling: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": config.autoscale_min,
                "max_replicas": config.autoscale_max,
                "target_ongoing_requests": config.target_ongoing_requests,
            }
        }
        if config.autoscaling
        else {"num_replicas": config.replicas}
    )
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus_per_replica, "num_gpus": config.num_gpus_per_replica}
    if key := os.environ.get("IDEFICS2_API_KEY"):
        # Every replica's server checks the key the ingress passes on, on whichever node it runs.
        actor_options["runtime_env"] = {"env_vars": {"IDEFICS2_API_KEY": key}}
    replicas = serve.deployment(
        name="Idefics2Replica",
        ray_actor_options=actor_options,
        max_ongoing_requests=config.max_ongoing_requests,
        health_check_period_s=config.health_check_period_s,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        **scaling,
    )(Idefics2Replica).bind(config.serve_command(), config.startup_timeout_s)
    ingress = serve.deployment(
        name="Idefics2Ingress",
        ray_actor_options={"num_cpus": 0},
        # The ingress only waits on replicas: it takes what all of them can hold.
        max_ongoing_requests=config.max_ongoing_requests * max(config.replicas, config.autoscale_max or 0),
    )(Idefics2Ingress)
    return ingress.bind(replicas, config.retries)


def app_builder(args: dict[str, Any]) -> Application:
    """For `serve run idefics2_serve_ray.app:app_builder replicas=2 model=...` and Serve config files."""
    return build_app(Idefics2RayConfig.model_validate(args))
