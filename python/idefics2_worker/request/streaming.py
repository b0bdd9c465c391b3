"""Token streaming: text deltas per new token, for generate()'s streamer hook and the fast decoder alike."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from transformers.generation.streamers import BaseStreamer

OnToken = Callable[[str, list[int]], None]


class TokenStreamer(BaseStreamer):
    """Emits (text delta, ids) per new token; the deltas concatenate to the decode of all generated ids.

    Text is held back while it ends with U+FFFD (an incomplete multi-byte character) or with whitespace
    (a tokenizer's cleanup may still remove a space before punctuation); `finish` flushes what is left.
    """

    def __init__(self, decode: Callable[[list[int]], str], on_token: OnToken, cancel: threading.Event) -> None:
        self._decode = decode
        self._on_token = on_token
        self._cancel = cancel
        self._seen_prompt = False
        self.ids: list[int] = []
        self.emitted = ""

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            # generate() hands the prompt to the streamer first.
            self._seen_prompt = True
            return
        new_ids = [int(i) for i in value.reshape(-1).tolist()]
        self.ids.extend(new_ids)
        if self._cancel.is_set():
            return
        self._on_token(self._delta(), new_ids)

    def end(self) -> None:
        pass

    def _delta(self) -> str:
        text = self._decode(self.ids)
        if not text.startswith(self.emitted):
            return ""
        stable = text.rstrip()
        while stable.endswith("\ufffd"):
            stable = stable[:-1].rstrip()
        if len(stable) <= len(self.emitted):
            return ""
        delta = stable[len(self.emitted) :]
        self.emitted = stable
        return delta

    def finish(self, final_text: str) -> str:
        """The text not yet emitted, given the final text (which starts with what was emitted)."""
        if not final_text.startswith(self.emitted):
            return ""
        rest = final_text[len(self.emitted) :]
        self.emitted = final_text
        return rest
