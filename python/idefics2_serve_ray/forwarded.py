"""What the ingress hands a replica and what comes back: plain data, pickled by Ray between the two actors."""

from __future__ import annotations

from dataclasses import dataclass

# Hop-by-hop and framing headers belong to each connection, not to the request or answer they carry.
NOT_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "date"}
)
REPLICA_HEADER = "x-idefics2-replica"
SERVER_PID_HEADER = "x-idefics2-server-pid"


@dataclass(frozen=True)
class ForwardRequest:
    method: str
    path: str  # with its query string
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class ResponseHead:
    """The first item a replica yields. `body` is the whole answer unless it streams (server-sent events)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    replica: str
    server_pid: int
    body: bytes | None


class ReplicaServerError(RuntimeError):
    """A replica's `idefics2 serve` could not be reached or broke off an answer."""


def forwarded_headers(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in headers if name.lower() not in NOT_FORWARDED)
