"""The typed error a client gets when its replica fails: OpenAI's error body, code `replica_failed`."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

CODE = "replica_failed"
STATUS = 503


def replica_failure_body(detail: str) -> dict[str, dict[str, str | None]]:
    return {
        "error": {
            "message": f"The replica serving this request failed; send it again. ({detail})",
            "type": "server_error",
            "param": None,
            "code": CODE,
        }
    }


def replica_failure_response(detail: str) -> JSONResponse:
    return JSONResponse(replica_failure_body(detail), status_code=STATUS)


def replica_failure_event(detail: str) -> bytes:
    """The same error as a server-sent event, as `idefics2 serve` ends a stream that fails after its first chunk."""
    return f"data: {json.dumps(replica_failure_body(detail))}\n\n".encode()
