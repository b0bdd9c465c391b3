"""The HTTP entry: every request goes to a replica through Ray's router; a replica that fails is answered for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import cast

from ray.exceptions import RayActorError
from ray.serve.exceptions import RequestCancelledError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .forwarded import (
    REPLICA_HEADER,
    SERVER_PID_HEADER,
    ForwardRequest,
    ReplicaServerError,
    ResponseHead,
    forwarded_headers,
)
from .replica_failure import replica_failure_event, replica_failure_response

logger = logging.getLogger("ray.serve")
# A replica that died, or whose server did, before it answered anything.
REPLICA_FAILURES = (RayActorError, ReplicaServerError)
RETRY_PAUSE_S = 0.2


class Idefics2Ingress:
    def __init__(self, replicas: DeploymentHandle, retries: int) -> None:
        self._replicas = replicas.options(stream=True)
        self._retries = retries

    async def __call__(self, request: Request) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        forward = ForwardRequest(request.method, path, forwarded_headers(request.headers.items()), await request.body())
        try:
            head, rest = await self._first_answer(forward)
        except REPLICA_FAILURES as failure:
            return replica_failure_response(_detail(failure))
        headers = dict(head.headers) | {REPLICA_HEADER: head.replica, SERVER_PID_HEADER: str(head.server_pid)}
        if head.body is not None:
            return Response(head.body, status_code=head.status, headers=headers)
        return StreamingResponse(_passed_on(rest), status_code=head.status, headers=headers)

    async def _first_answer(self, forward: ForwardRequest) -> tuple[ResponseHead, DeploymentResponseGenerator]:
        # Until a replica answers, nothing has reached the client and generating has no side effects: sending the
        # request again (to whichever replica the router picks, a dead one being dropped from its set) is safe.
        for attempt in range(self._retries + 1):
            answer = cast(DeploymentResponseGenerator, self._replicas.forward.remote(forward))
            try:
                head = await answer.__anext__()
            except REPLICA_FAILURES as failure:
                if attempt == self._retries:
                    raise
                logger.warning("replica failed before answering (%s); sending again", _detail(failure))
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
                continue
            assert isinstance(head, ResponseHead)
            return head, answer
        raise AssertionError("unreachable")


async def _passed_on(answer: DeploymentResponseGenerator) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for chunk in answer:
            yield chunk
        finished = True
    except REPLICA_FAILURES as failure:
        # Part of the answer is out: it cannot be sent again, so the stream ends with the typed error event.
        finished = True
        yield replica_failure_event(_detail(failure))
    except RequestCancelledError:
        finished = True
    finally:
        if not finished:
            answer.cancel()  # the client left: the replica's request to its server closes, which stops generating


def _detail(failure: BaseException) -> str:
    if isinstance(failure, ReplicaServerError):
        return str(failure).splitlines()[-1][:300]
    return f"{type(failure).__name__}: the replica's process died"
