"""One `idefics2 serve` child on a free loopback port: started, watched, stopped. Knows nothing of Ray."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

LISTENING = re.compile(r"idefics2 serve: listening on (http://\S+?)/? \(")
STOP_GRACE_S = 15.0


class Idefics2ServeError(RuntimeError):
    """The child `idefics2 serve` exited or never said where it listens."""


def _die_with_parent() -> None:
    # A replica killed outright (ray.kill, OOM) cannot stop its child: the kernel sends it SIGTERM instead.
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Idefics2Process:
    """`<command> --host 127.0.0.1 --port 0`, with its URL read from its first line of output."""

    def __init__(self, command: list[str], startup_timeout_s: float) -> None:
        self._stopping = False
        self._process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (runs prctl only; no locks taken)
        )
        self.url = self._await_url(startup_timeout_s)

    @property
    def pid(self) -> int:
        return self._process.pid

    def exit_code(self) -> int | None:
        return self._process.poll()

    def _await_url(self, timeout_s: float) -> str:
        found: list[str] = []
        ready = threading.Event()
        stdout = self._process.stdout
        assert stdout is not None

        def read() -> None:
            # Every line goes on to this process's stderr (the replica's log); the first match is the address.
            with stdout:
                for line in stdout:
                    sys.stderr.write(line)
                    if not found and (match := LISTENING.search(line)):
                        found.append(match.group(1))
                        ready.set()
            ready.set()

        reader = threading.Thread(target=read, name="idefics2-serve-stdout", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.5):
            if time.monotonic() > deadline:
                self.stop()
                raise Idefics2ServeError(f"idefics2 serve did not listen within {timeout_s:.0f} s")
        if not found:
            code = self._process.wait()
            reader.join(5)
            raise Idefics2ServeError(f"idefics2 serve exited with code {code} before it listened (its log is above)")
        return found[0]

    def watch(self, on_unexpected_exit: Callable[[int], None]) -> None:
        """Calls `on_unexpected_exit(code)` from a thread if the child ends without stop()."""

        def wait() -> None:
            code = self._process.wait()
            if not self._stopping:
                on_unexpected_exit(code)

        threading.Thread(target=wait, name="idefics2-serve-watch", daemon=True).start()

    def stop(self) -> None:
        """SIGTERM (requests in flight get the server's shutdown bound), then SIGKILL past STOP_GRACE_S."""
        self._stopping = True
        if self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()
