"""Workarounds for the pinned libraries: each does its narrow job and nothing more."""

from __future__ import annotations

import logging

import pytest
import torch
from test_decode_linears import eight_bit_layer

from idefics2_worker.compat import _DropInt8CastNotice, quiet_int8_cast_notice


def test_the_per_call_int8_cast_notice_is_dropped_and_other_bitsandbytes_logs_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = eight_bit_layer(64, 16)
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    for installed in [f for f in logger.filters if isinstance(f, _DropInt8CastNotice)]:
        logger.removeFilter(installed)  # an engine loaded earlier in this process installed it
    with caplog.at_level(logging.WARNING):
        with torch.inference_mode():
            layer(torch.randn(1, 64))
        assert any("inputs will be cast" in record.getMessage() for record in caplog.records)
        caplog.clear()
        quiet_int8_cast_notice()
        quiet_int8_cast_notice()  # once is enough: no second filter
        with torch.inference_mode():
            layer(torch.randn(1, 64))
        logger.warning("something else bitsandbytes has to say")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["something else bitsandbytes has to say"]
    assert len(logger.filters) == 1
