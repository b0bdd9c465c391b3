"""The demo conversation and pictures, read the way the reference program reads them.

Free of the test suite's imports (conftest, pytest) so that scripts/gpu/check_deterministic.py uses it on a GPU
machine without pytest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo"


def demo_messages() -> list[dict[str, Any]]:
    return json.loads((DEMO_DIR / "conversation.json").read_text())


def demo_images() -> list[Any]:
    from transformers.image_utils import load_image

    return [load_image(str(DEMO_DIR / "first.png")), load_image(str(DEMO_DIR / "second.jpg"))]


def as_payload(images: list[Any]) -> tuple[list[dict[str, int]], bytes]:
    """Raw RGB bytes back to back, with the offsets the protocol's `images` field carries."""
    specs, chunks, offset = [], [], 0
    for image in images:
        data = image.convert("RGB").tobytes()
        specs.append({"offset": offset, "length": len(data), "width": image.width, "height": image.height})
        chunks.append(data)
        offset += len(data)
    return specs, b"".join(chunks)


def generate_params(max_new_tokens: int, **options: Any) -> tuple[dict[str, Any], bytes]:
    specs, payload = as_payload(demo_images())
    wire_options = {"maxNewTokens": max_new_tokens, **options}
    return {"messages": demo_messages(), "images": specs, "options": wire_options, "stream": True}, payload
