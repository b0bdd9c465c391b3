"""How a probe answers: one JSON line after a newline, flushed."""

from __future__ import annotations

import io
import json

from idefics2_worker.probe.output import write_report


def test_the_report_is_one_json_line_after_a_newline() -> None:
    stream = io.StringIO()
    write_report({"python": "3.11.7", "torch": None}, stream)
    assert stream.getvalue() == "\n" + json.dumps({"python": "3.11.7", "torch": None}) + "\n"
