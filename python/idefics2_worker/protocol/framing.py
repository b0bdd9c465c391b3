"""Frames of docs/PROTOCOL.md: [u32 BE header length][u32 BE payload length][JSON header][payload]."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_PAYLOAD_BYTES = 1024 * 1024 * 1024
_PREFIX = struct.Struct(">II")


class FrameError(Exception):
    """The byte stream is not the protocol; `fatal` means the reader lost its place and must stop."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


def encode_header(header: dict[str, Any]) -> bytes:
    # NaN and Infinity are not JSON; refusing them here keeps the SDK's parser honest.
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (from a path, a message) has no UTF-8 form; JSON's \ud800 escape carries it exactly.
        return json.dumps(header, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One whole frame as bytes (tests and small frames)."""
    head = encode_header(header)
    _check_lengths(len(head), len(payload))
    return _PREFIX.pack(len(head), len(payload)) + head + payload


def _check_lengths(header_len: int, payload_len: int) -> None:
    if header_len > MAX_HEADER_BYTES:
        raise FrameError(f"Frame header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte limit", fatal=True)
    if payload_len > MAX_PAYLOAD_BYTES:
        raise FrameError(f"Frame payload of {payload_len} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit", fatal=True)


def _read_exact(stream: BinaryIO, size: int, *, at_boundary: bool) -> bytes | None:
    """Reads `size` bytes; None on end of stream at a frame boundary, FrameError on end inside a frame.

    A buffered stream (the worker's stdin) fills the one bytes object its read returns straight from the pipe, so a
    picture payload of megabytes is not copied again here; a raw stream may return less, and the rest follows."""
    first = stream.read(size) or b""
    if len(first) == size:
        return first
    if not first and at_boundary:
        return None
    parts = [first]
    filled = len(first)
    while filled < size:
        chunk = stream.read(size - filled)
        if not chunk:
            raise FrameError(f"Stream ended inside a frame ({filled} of {size} bytes read)", fatal=True)
        parts.append(chunk)
        filled += len(chunk)
    return b"".join(parts)


def _parsed_header(head: bytes) -> dict[str, Any] | FrameError:
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return FrameError(f"Frame header is not UTF-8 JSON: {error}", fatal=False)
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        return FrameError("Frame header must be a JSON object with a string `type`", fatal=False)
    return header


def read_frame(
    stream: BinaryIO, on_header: Callable[[dict[str, Any], int], None] | None = None
) -> tuple[dict[str, Any], bytes] | None:
    """Reads one frame; None at a clean end of stream. `on_header(header, payload bytes)` is called once a valid
    header is read, before its payload is. A frame whose header is not valid is still read to its end, so the next
    frame starts where it should."""
    prefix = _read_exact(stream, _PREFIX.size, at_boundary=True)
    if prefix is None:
        return None
    header_len, payload_len = _PREFIX.unpack(prefix)
    _check_lengths(header_len, payload_len)
    header = _parsed_header(_read_exact(stream, header_len, at_boundary=False) or b"")
    if on_header is not None and not isinstance(header, FrameError):
        on_header(header, payload_len)
    payload = (_read_exact(stream, payload_len, at_boundary=False) or b"") if payload_len else b""
    if isinstance(header, FrameError):
        raise header
    return header, payload


class FrameWriter:
    """Writes whole frames to a binary stream; a lock keeps frames from two threads from interleaving."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def write(self, header: dict[str, Any], payload: bytes = b"") -> bool:
        """Sends one frame; False when the reader has gone away (broken pipe)."""
        head = encode_header(header)
        _check_lengths(len(head), len(payload))
        with self._lock:
            if self.closed:
                return False
            try:
                self._stream.write(_PREFIX.pack(len(head), len(payload)) + head)
                if payload:
                    self._stream.write(payload)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The SDK closed our stdout (or it was closed under us): nothing more can be said.
                self.closed = True
                return False
            return True
