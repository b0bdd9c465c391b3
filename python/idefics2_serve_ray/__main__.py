"""`python -m idefics2_serve_ray`: joins (or starts) a Ray cluster and serves idefics2 on it until Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from .config import Idefics2RayConfig
from .idefics2_cli import Idefics2CliNotFoundError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m idefics2_serve_ray",
        description="idefics2 on Ray Serve: N replicas of `idefics2 serve` behind one OpenAI-compatible endpoint.",
    )
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--host", default="127.0.0.1", help="where Ray's HTTP proxy listens (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None, help="--model of every replica (default: the embedded model)")
    parser.add_argument("--replicas", type=int, default=1, help="fixed number of replicas (default 1)")
    parser.add_argument("--autoscale", default=None, metavar="MIN,MAX", help="autoscale between MIN and MAX replicas")
    parser.add_argument("--target-ongoing-requests", type=float, default=4.0)
    parser.add_argument("--max-ongoing-requests", type=int, default=16, help="requests one replica takes at once")
    parser.add_argument("--num-gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--num-cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=2, help="resends of a request whose replica failed first")
    parser.add_argument("--command", default=None, help="how to run the idefics2 CLI on every node, e.g. 'idefics2'")
    parser.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: more `idefics2 serve` flags")
    return parser


def _config(arguments: argparse.Namespace) -> Idefics2RayConfig:
    autoscale: dict[str, int] = {}
    if arguments.autoscale:
        low, _, high = arguments.autoscale.partition(",")
        autoscale = {"autoscale_min": int(low), "autoscale_max": int(high)}
    serve_args = arguments.serve_args[1:] if arguments.serve_args[:1] == ["--"] else arguments.serve_args
    return Idefics2RayConfig(
        model=arguments.model,
        serve_args=tuple(serve_args),
        command=tuple(shlex.split(arguments.command)) if arguments.command else None,
        replicas=arguments.replicas,
        target_ongoing_requests=arguments.target_ongoing_requests,
        max_ongoing_requests=arguments.max_ongoing_requests,
        num_gpus_per_replica=arguments.num_gpus_per_replica,
        num_cpus_per_replica=arguments.num_cpus_per_replica,
        retries=arguments.retries,
        **autoscale,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        config = _config(arguments)
        config.serve_command()
    except (ValidationError, ValueError, Idefics2CliNotFoundError) as error:
        print(f"idefics2_serve_ray: {error}", file=sys.stderr)
        return 2
    if not _is_loopback(arguments.host) and not os.environ.get("IDEFICS2_API_KEY"):
        print(
            f"idefics2_serve_ray: --host {arguments.host} needs IDEFICS2_API_KEY set (as `idefics2 serve`)",
            file=sys.stderr,
        )
        return 2

    import ray
    from ray import serve

    from .app import build_app

    address = arguments.address or os.environ.get("RAY_ADDRESS")
    # Ray ships this package to every node the job's actors run on: other nodes need Node and the npm package only.
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(runtime_env=runtime_env, include_dashboard=False)
    serve.start(http_options={"host": arguments.host, "port": arguments.port})
    serve.run(build_app(config), name="idefics2", route_prefix="/")
    print(f"idefics2_serve_ray: serving on http://{arguments.host}:{arguments.port}/v1", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
