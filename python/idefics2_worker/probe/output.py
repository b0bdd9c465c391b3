"""How a probe answers: one JSON object on the last line of the real stdout."""

import json
import os
import sys


def claim_stdout():
    """Keeps a private copy of stdout for the report and points fd 1 at stderr, so that anything a library prints
    while it is imported lands on stderr and never corrupts the JSON."""
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return report


def write_report(report, stream=None):
    """Writes `report` as one JSON line, after a newline that ends anything printed before it."""
    if stream is None:
        stream = sys.stdout
    stream.write("\n" + json.dumps(report) + "\n")
    stream.flush()
