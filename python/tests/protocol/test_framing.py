"""Frames: round trips, limits, a header seen before its payload is read, and a writer shared by two threads."""

from __future__ import annotations

import io
import os
import struct
import threading

import pytest

from idefics2_worker.protocol.framing import (
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    FrameError,
    FrameWriter,
    encode_frame,
    read_frame,
)


def test_a_frame_round_trips_its_header_and_raw_payload() -> None:
    payload = bytes(range(256)) * 3
    header = {"type": "request", "id": 7, "params": {"text": "Wo ist das? 東京 🗼"}}
    stream = io.BytesIO(encode_frame(header, payload) + encode_frame({"type": "ping"}))
    assert read_frame(stream) == (header, payload)
    assert read_frame(stream) == ({"type": "ping"}, b"")
    assert read_frame(stream) is None


def test_the_prefix_is_two_big_endian_u32_lengths_then_json_then_payload() -> None:
    frame = encode_frame({"type": "x"}, b"\x00\x01")
    head = b'{"type":"x"}'
    assert frame == struct.pack(">II", len(head), 2) + head + b"\x00\x01"


@pytest.mark.parametrize(
    ("header_len", "payload_len"),
    [(MAX_HEADER_BYTES + 1, 0), (10, MAX_PAYLOAD_BYTES + 1), (0xFFFFFFFF, 0xFFFFFFFF)],
)
def test_a_length_over_the_limits_is_a_fatal_protocol_error(header_len: int, payload_len: int) -> None:
    with pytest.raises(FrameError, match="exceeds") as raised:
        read_frame(io.BytesIO(struct.pack(">II", header_len, payload_len) + b"{}"))
    assert raised.value.fatal


def test_a_header_exactly_at_the_limit_is_accepted() -> None:
    header = {"type": "x", "pad": ""}
    overhead = len(encode_frame(header)) - 8
    header["pad"] = "a" * (MAX_HEADER_BYTES - overhead)
    stream = io.BytesIO(encode_frame(header))
    assert read_frame(stream) == (header, b"")


def test_a_stream_that_ends_inside_a_frame_is_a_fatal_protocol_error() -> None:
    whole = encode_frame({"type": "request"}, b"12345")
    for cut in (3, 8, len(whole) - 1):
        with pytest.raises(FrameError, match="ended inside a frame") as raised:
            read_frame(io.BytesIO(whole[:cut]))
        assert raised.value.fatal


@pytest.mark.parametrize("head", [b"not json", b"[1, 2]", b'{"type": 3}', b"\xff\xfe"])
def test_a_bad_header_is_a_recoverable_protocol_error_and_the_next_frame_still_reads(head: bytes) -> None:
    stream = io.BytesIO(struct.pack(">II", len(head), 1) + head + b"!" + encode_frame({"type": "ping"}))
    with pytest.raises(FrameError) as raised:
        read_frame(stream)
    assert not raised.value.fatal
    assert read_frame(stream) == ({"type": "ping"}, b"")


def test_the_writer_refuses_nan_because_it_is_not_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        FrameWriter(io.BytesIO()).write({"type": "result", "value": float("nan")})


def test_two_threads_writing_at_once_never_interleave_frames() -> None:
    sink = io.BytesIO()
    writer = FrameWriter(sink)
    big = b"x" * 200_000

    def write_many(tag: str) -> None:
        for index in range(200):
            writer.write({"type": "event", "tag": tag, "index": index}, big if index % 50 == 0 else b"")

    threads = [threading.Thread(target=write_many, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.seek(0)
    seen = {"a": [], "b": []}
    while (frame := read_frame(sink)) is not None:
        header, payload = frame
        seen[header["tag"]].append(header["index"])
        assert payload == (big if header["index"] % 50 == 0 else b"")
    assert seen == {"a": list(range(200)), "b": list(range(200))}


def test_a_closed_reader_makes_write_return_false_instead_of_raising() -> None:
    sink = io.BytesIO()
    sink.close()
    writer = FrameWriter(sink)
    assert writer.write({"type": "ready"}) is False
    assert writer.closed


@pytest.mark.parametrize("text", ["/nonexistent/\ud800", "\udfff alone", "a \ud83d without its pair", "ok \U0001f5fc"])
def test_a_header_holding_lone_surrogates_is_encoded_with_json_escapes_and_reads_back_exactly(text: str) -> None:
    header = {"type": "error", "id": 1, "error": {"code": "MODEL_NOT_FOUND", "message": text}}
    stream = io.BytesIO(encode_frame(header))
    assert read_frame(stream) == (header, b"")
    out = io.BytesIO()
    assert FrameWriter(out).write(header) is True
    assert read_frame(io.BytesIO(out.getvalue())) == (header, b"")


class TrickleStream(io.RawIOBase):
    """A raw stream that gives at most `step` bytes a read, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_frames_read_whole_from_a_stream_that_gives_a_few_bytes_at_a_time(step: int) -> None:
    payload = bytes(range(256)) * 40
    header = {"type": "request", "id": 3, "params": {"text": "東京"}}
    stream = TrickleStream(encode_frame(header, payload) + encode_frame({"type": "ping"}), step)
    assert read_frame(stream) == (header, payload)  # type: ignore[arg-type]
    assert read_frame(stream) == ({"type": "ping"}, b"")  # type: ignore[arg-type]
    assert read_frame(stream) is None  # type: ignore[arg-type]


def test_a_trickling_stream_that_ends_inside_a_payload_is_a_fatal_protocol_error() -> None:
    whole = encode_frame({"type": "request"}, b"0123456789")
    with pytest.raises(FrameError, match=r"ended inside a frame \(4 of 10 bytes read\)") as raised:
        read_frame(TrickleStream(whole[:-6], 3))  # type: ignore[arg-type]
    assert raised.value.fatal


def test_a_large_payload_from_a_buffered_pipe_comes_back_as_bytes() -> None:
    payload = bytes(range(256)) * 16_384  # 4 MiB, more than a pipe holds at once
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: _write_all(write_end, encode_frame({"type": "request"}, payload)))
    writer.start()
    with os.fdopen(read_end, "rb") as stream:
        frame = read_frame(stream)
    writer.join()
    assert frame is not None
    assert type(frame[1]) is bytes
    assert frame[1] == payload


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def test_on_header_sees_a_frame_header_before_its_payload_is_sent() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "wb", buffering=0) as writer:
        whole = encode_frame({"type": "request", "id": 3}, b"pixels" * 1000)
        payload_at = len(whole) - 6000
        writer.write(whole[:payload_at])  # the prefix and header only
        headers: list[tuple[dict[str, object], int]] = []
        seen = threading.Event()
        frames: list[object] = []

        def on_header(header: dict[str, object], payload_bytes: int) -> None:
            headers.append((header, payload_bytes))
            seen.set()

        reading = threading.Thread(target=lambda: frames.append(read_frame(reader, on_header)))
        reading.start()
        assert seen.wait(10)
        assert headers == [({"type": "request", "id": 3}, 6000)]
        assert not frames  # still waiting for the payload
        writer.write(whole[payload_at:])
        reading.join(10)
        assert frames == [({"type": "request", "id": 3}, b"pixels" * 1000)]


def test_on_header_is_not_called_for_a_bad_header_whose_frame_is_still_read_to_its_end() -> None:
    head = b"not json"
    stream = io.BytesIO(struct.pack(">II", len(head), 3) + head + b"abc" + encode_frame({"type": "ping"}))
    headers: list[object] = []
    with pytest.raises(FrameError):
        read_frame(stream, lambda header, size: headers.append(header))
    assert headers == []
    assert read_frame(stream, lambda header, size: headers.append(header)) == ({"type": "ping"}, b"")
    assert headers == [{"type": "ping"}]
