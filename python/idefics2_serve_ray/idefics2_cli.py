"""Where the idefics2 command is: IDEFICS2_CLI, else the package this folder ships in, else `idefics2` on PATH."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

# python/idefics2_serve_ray/ sits beside dist/ in the npm package and in a checkout.
PACKAGED_CLI = Path(__file__).resolve().parents[2] / "dist" / "cli" / "main.js"


class Idefics2CliNotFoundError(RuntimeError):
    """No idefics2 command to start on this node."""


def idefics2_cli() -> list[str]:
    """The command that runs the idefics2 CLI, as argv (resolved on the driver, so it must hold on every node)."""
    if given := os.environ.get("IDEFICS2_CLI"):
        return shlex.split(given)
    node = shutil.which("node")
    if PACKAGED_CLI.is_file() and node:
        return [node, str(PACKAGED_CLI)]
    if installed := shutil.which("idefics2"):
        return [installed]
    raise Idefics2CliNotFoundError(
        f"Cannot find the idefics2 CLI: {PACKAGED_CLI} is missing (run `npm run build`) or Node is not on PATH, and "
        "`idefics2` is not on PATH. Install the npm package (Node >= 20) on every node, or set IDEFICS2_CLI "
        "(or --command)."
    )
