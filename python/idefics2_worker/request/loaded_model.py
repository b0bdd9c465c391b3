"""The loaded model as the decoders see it: the model, its processor and the ids that end a turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    processor: Any
    # generation_config's EOS ids plus <end_of_utterance>: the reference stops on either.
    eos_ids: tuple[int, ...]

    def decode(self, ids: list[int]) -> str:
        """The text of generated ids, as the reference prints it (special tokens skipped)."""
        return self.processor.batch_decode([ids], skip_special_tokens=True)[0]
