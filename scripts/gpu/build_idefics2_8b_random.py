#!/usr/bin/env python3
"""Build a checkpoint with idefics2-8b's exact architecture and random weights, where it will run.

Speed and memory do not depend on weight values, so this stands in for HuggingFaceM4/idefics2-8b on machines
that cannot reach the hub. It is written with save_pretrained (safetensors shards, tokenizer, processor,
generation config) so loading it takes the same from_pretrained path a user's hub download takes:
  - model: SigLIP-so400m vision tower (1152 hidden, 27 layers, patch 14, 980 px), perceiver resampler
    (64 latents, depth 3), Mistral-7B text model (4096 hidden, 32 layers, vocab 32003); 8.40 B parameters;
  - tokenizer: 32003 entries, Llama-style byte fallback, <fake_token_around_image> 32000, <image> 32001,
    <end_of_utterance> 32002, BOS 1, EOS 2, pad 0 on the left;
  - processor: image_seq_len 64, image splitting on, longest edge 980, shortest edge 378, the hub chat template;
  - generation config: EOS [2, 32002], as the hub model's.

Usage: python scripts/gpu/build_idefics2_8b_random.py --out /tmp/idefics2-8b-random [--device cuda] [--tiny]
`--tiny` keeps every id and processor setting but shrinks the layers, to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2Processor,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics2.image_processing_pil_idefics2 import (
    Idefics2ImageProcessorPil,
)

# The hub chat template and the tokenizer recipe are the embedded model's (scripts/embedded-model/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "embedded-model"))
from build_tiny_model import CHAT_TEMPLATE, llama_style_tokenizer

VOCAB = 32003
SPECIALS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    # Filler pieces stand in for Mistral's 32000 learnt ones: ids and sizes matter here, not the merges.
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])}
    for char in ["\u2581"] + [chr(c) for c in range(33, 127)]:
        vocab.setdefault(char, len(vocab))
    while len(vocab) < VOCAB - len(SPECIALS):
        vocab[f"\u2581w{len(vocab)}"] = len(vocab)
    tokenizer = llama_style_tokenizer(vocab, [], model_max_length=32768)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIALS))
    assert ids == [32000, 32001, 32002], ids
    assert len(tokenizer) == VOCAB, len(tokenizer)
    return tokenizer


def build_config(tiny: bool) -> Idefics2Config:
    vision = {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
    }
    perceiver = {
        "resampler_n_heads": 16,
        "resampler_head_dim": 96,
        "num_key_value_heads": 4,
        "resampler_depth": 3,
    }
    text = {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    }
    if tiny:
        vision = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        }
        perceiver = {
            "resampler_n_heads": 4,
            "resampler_head_dim": 16,
            "num_key_value_heads": 2,
            "resampler_depth": 1,
        }
        text = {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
    return Idefics2Config(
        vision_config={
            **vision,
            "image_size": 980,
            "patch_size": 14,
            "num_channels": 3,
        },
        perceiver_config={
            **perceiver,
            "resampler_n_latents": 64,
            "hidden_act": "silu",
            "hidden_size": text["hidden_size"],
            "rms_norm_eps": 1e-5,
        },
        text_config={
            **text,
            "model_type": "mistral",
            "num_key_value_heads": 8 if not tiny else 2,
            "vocab_size": VOCAB,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "sliding_window": 4096,
            "pad_token_id": 0,
        },
        image_token_id=32001,
        tie_word_embeddings=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    tokenizer = build_tokenizer()
    image_processor = Idefics2ImageProcessorPil(
        do_image_splitting=True, size={"shortest_edge": 378, "longest_edge": 980}
    )
    processor = Idefics2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=64,
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Idefics2ForConditionalGeneration._from_config(build_config(args.tiny), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 32002], pad_token_id=0)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out, max_shard_size="5GB")
    processor.save_pretrained(args.out)
    seconds = time.perf_counter() - started
    print(
        f"wrote {args.out}: {parameters / 1e9:.3f} B parameters in {seconds:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
