"""Entry point: `python -m idefics2_worker`. Only frames reach the real stdout."""

from __future__ import annotations

import contextlib
import os
import sys


def _claim_stdout() -> int:
    """Keeps a private fd on the real stdout for frames, then points fd 1 and sys.stdout at stderr."""
    frames_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frames_fd


def _lead_process_group() -> None:
    """Makes the worker lead its own process group, so the SDK can end it with everything it started."""
    # Already a group leader (setsid) or not allowed here: the SDK then signals the worker alone.
    if hasattr(os, "setpgid"):
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)


def main() -> int:
    _lead_process_group()
    frames_fd = _claim_stdout()
    # Imports come after the redirection: anything they print lands on stderr.
    from . import PROTOCOL_VERSION
    from .engine.engine import Engine
    from .engine.info import info, versions
    from .protocol.framing import FrameWriter
    from .server.frame_loop import Server

    writer = FrameWriter(os.fdopen(frames_fd, "wb", buffering=1 << 16))
    writer.write({"type": "ready", "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "versions": versions()})
    server = Server(Engine(), sys.stdin.buffer, writer, info=info)
    code = server.serve()
    if not server.stopped_cleanly():
        # A load cannot be interrupted; exit now rather than make the SDK wait for it.
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
