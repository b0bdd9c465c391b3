"""A replica: owns one `idefics2 serve` process on its node and passes requests to it, answers streamed through."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import aiohttp
from ray import serve

from .forwarded import ForwardRequest, ReplicaServerError, ResponseHead, forwarded_headers
from .idefics2_process import Idefics2Process

logger = logging.getLogger("ray.serve")
# No total limit: a long answer may take minutes; `idefics2 serve --request-timeout-ms` bounds one if wanted.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


class Idefics2Replica:
    def __init__(self, command: list[str], startup_timeout_s: float) -> None:
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._server = Idefics2Process(command, startup_timeout_s)
        self._server.watch(self._server_died)
        self._session: aiohttp.ClientSession | None = None
        logger.info("idefics2 serve (pid %d) at %s", self._server.pid, self._server.url)

    def _server_died(self, code: int) -> None:
        # Leaving at once makes Ray see this replica die: routers stop sending to it, the controller starts another,
        # and requests it held fail at the ingress with a typed error instead of waiting on a dead port.
        logger.error("idefics2 serve (pid %d) exited with code %d: ending this replica", self._server.pid, code)
        os._exit(1)

    async def forward(self, request: ForwardRequest) -> AsyncIterator[ResponseHead | bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=CLIENT_TIMEOUT, auto_decompress=False)
        try:
            async with self._session.request(
                request.method, self._server.url + request.path, headers=list(request.headers), data=request.body
            ) as response:
                streams = response.content_type == "text/event-stream"
                yield ResponseHead(
                    status=response.status,
                    headers=forwarded_headers(list(response.headers.items())),
                    replica=self._replica,
                    server_pid=self._server.pid,
                    body=None if streams else await response.read(),
                )
                if streams:
                    async for chunk in response.content.iter_any():
                        yield chunk
        except aiohttp.ClientError as error:
            raise ReplicaServerError(f"replica {self._replica}: idefics2 serve failed: {error!r}") from None

    def check_health(self) -> None:
        if (code := self._server.exit_code()) is not None:
            raise ReplicaServerError(f"replica {self._replica}: idefics2 serve exited with code {code}")

    def __del__(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()
