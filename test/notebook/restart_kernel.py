"""Starts the tslab kernel in the current folder, loads the model there, restarts the kernel, and prints one JSON
line: the worker's pid and whether it was still running after the restart. Run with the dev environment's Python
(jupyter_client comes with nbconvert); the kernel spec `tslab` must be on JUPYTER_PATH."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from jupyter_client.client import KernelClient
from jupyter_client.manager import KernelManager

LOAD = "\n".join(
    [
        'import { Idefics2 } from "idefics2";',
        "const model = await Idefics2.load();",
        "console.log(`worker ${model.workerPid}`);",
    ]
)


def run(client: KernelClient, code: str, timeout: float) -> str:
    msg_id = client.execute(code)
    text, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            raise RuntimeError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(text)
    raise TimeoutError(f"no answer within {timeout} s")


def running(pid: int) -> bool:
    """Alive and not a zombie (this machine's init may not reap orphans at once)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def main() -> int:
    manager = KernelManager(kernel_name="tslab")
    manager.start_kernel(cwd=os.getcwd())
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    output = run(client, LOAD, timeout=300)
    match = re.search(r"worker (\d+)", output)
    if match is None:
        print(json.dumps({"error": f"no worker pid in {output!r}"}))
        return 1
    pid = int(match.group(1))
    before = running(pid)
    manager.restart_kernel(now=False)
    deadline = time.monotonic() + 15
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    after = running(pid)
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    print(json.dumps({"pid": pid, "runningBefore": before, "runningAfterRestart": after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
