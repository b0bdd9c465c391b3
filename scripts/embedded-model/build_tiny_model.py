#!/usr/bin/env python3
"""Build, train and save the tiny Idefics2 model embedded in this package (assets/tiny-idefics2).

The model uses the real transformers classes (Idefics2Config, Idefics2ForConditionalGeneration,
Idefics2Processor with the PIL image processor) at a tiny size, so that the package's worker runs exactly
the code path of HuggingFaceM4/idefics2-8b:
  - tokenizer: a Llama-style byte-fallback BPE (Metaspace "▁", <unk>=0 (also pad), <s>=1 added at the
    start, </s>=2, 256 byte tokens <0x00>..<0xFF>, the trained pieces, then <fake_token_around_image>,
    <image>, <end_of_utterance> as the last three ids), wrapped as PreTrainedTokenizerFast;
  - processor: Idefics2Processor with image_seq_len == resampler_n_latents, image splitting on by default,
    small image sizes (longest edge 64, shortest edge 32) and the hub model's chat template;
  - model: SigLIP-style vision tower (patch 8, 64 px), perceiver resampler, Mistral text model.

It is trained on CPU, from a fixed seed, on PIL-drawn pictures (one circle, square or triangle in one of six
colours on a neutral background) in conversations built with processor.apply_chat_template + processor(...)
exactly as inference does, with loss on the assistant turns only:
  (a) one picture + "What colour is the shape?" (and paraphrases) -> "The shape is red.";
  (b) blog-shaped two-picture conversations -> the answer names the colour and shape of the LAST picture;
  (c) "What do we see in this image?" / "What shape is this?"; and a few text-only conversations.
About a quarter of the steps run with image splitting off, so both settings work.

Then it writes the demo pictures and conversation (assets/demo/) and, unless --skip-eval, runs
scripts/embedded-model/evaluate_tiny_model.py (unquantized, bitsandbytes 8-bit and 4-bit (fp4, the transformers
default) on CPU).

Usage:  python scripts/embedded-model/build_tiny_model.py --out assets/tiny-idefics2
Time:   training is 800 steps of 16 conversations: 315 s measured with the default 2 threads on an idle x86-64 CPU
        (torch 2.11 CPU kernels, tokenizers 0.23.2; that run produced the committed weights), plus ~10 s of setup and
        ~2 min of evaluation on 2 cores. On a 2-core machine shared with other jobs, expect 2-4x longer. Reproduction
        is exact for the tokenizer, pictures and data order; float weights are bit-identical only with the same torch
        build and thread count, and the evaluation must pass either way. --steps 0 writes an untrained model in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
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

SEED = 1234
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (240, 220, 30),
    "purple": (140, 45, 185),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE = "<fake_token_around_image>", "<image>", "<end_of_utterance>"
# The chat template of HuggingFaceM4/idefics2-8b's processor_config.json, verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LONGEST_EDGE, SHORTEST_EDGE, PATCH_SIZE = 64, 32, 8
N_LATENTS = 8

COLOUR_QUESTIONS = (
    "What colour is the shape?",
    "What color is the shape?",
    "Which colour is the shape?",
    "What colour is it?",
    "What is the colour of the shape?",
    "Which color is this shape?",
)
DESCRIBE_QUESTIONS = ("What do we see in this image?", "What is in this image?", "Describe this image.")
SHAPE_QUESTIONS = ("What shape is this?", "Which shape is in the picture?")
FOLLOW_UP_QUESTIONS = (
    "And how about this image? Which colour is that?",
    "And how about this image? Which color is that?",
    "And how about this image? What colour is the shape?",
    "And this image? Which colour is that?",
    "What about this one?",
)
TEXT_ONLY = (
    ("Hello!", "Hello! Show me a picture and I will tell you the colour of its shape."),
    ("What colours do you know?", "I know red, green, blue, yellow, purple and orange."),
    ("Which shapes do you know?", "I know circles, squares and triangles."),
    ("Who are you?", "I am a tiny Idefics2 model that names colours and shapes."),
)
# General English so that the vocabulary covers ordinary prompts; unseen words fall back to characters/bytes.
ENGLISH = """
In this image, we can see the city of New York, and more specifically the Statue of Liberty.
And how about this image? Which city is that? That is the Chicago skyline.
In which city is that bridge located? The bridge is located in the city of San Francisco.
The quick brown fox jumps over the lazy dog. A picture is worth a thousand words.
Please describe the picture in detail. What is happening here? Where was this photo taken?
Can you read the text on the sign? How many people are there? Is it day or night?
There is a man, a woman and a child walking in the park with their dog on a sunny day.
The weather is cold and cloudy, with a little rain in the morning and wind in the evening.
Tell me a story about a cat who lives on a boat. Write a short poem about the sea.
Thank you very much! You are welcome. Good morning, good afternoon, good night.
This is a test of the tokenizer: numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024, and symbols , . ; : ! ? ' " ( ) - / %.
Which one is bigger, the house or the car? The house is bigger than the car.
I would like to know more about the history of this building and the people who made it.
The image shows a table with some food, a cup of coffee, a book and a small plant.
Answer the question with one word. Explain your answer step by step. Summarize the document.
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- tokenizer, processor, config


def training_sentences() -> list[str]:
    sentences = [line.strip() for line in ENGLISH.strip().splitlines()]
    sentences += list(COLOUR_QUESTIONS + DESCRIBE_QUESTIONS + SHAPE_QUESTIONS + FOLLOW_UP_QUESTIONS)
    for question, answer in TEXT_ONLY:
        sentences += [question, answer]
    for colour in COLOURS:
        for shape in SHAPES:
            sentences += [
                f"The shape is {colour}.",
                f"In this image, we can see a {colour} {shape}.",
                f"That is a {colour} {shape}.",
                f"It is a {shape}.",
            ]
    sentences += ["User:", "Assistant:", "System:"]
    return sentences


def llama_style_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], model_max_length: int
) -> PreTrainedTokenizerFast:
    """Wraps a byte-fallback BPE as Llama/Mistral do, then appends the three Idefics2 special tokens."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="left",  # Idefics2 batches are left-padded, like the hub tokenizer
        model_max_length=model_max_length,
    )
    specials = [AddedToken(t, normalized=False, special=True) for t in (FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE)]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def build_tokenizer(vocab_pieces: int = 600) -> PreTrainedTokenizerFast:
    # Llama/Mistral-style: Metaspace pieces, byte fallback, <s> prepended, one leading space stripped on decode.
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer_model = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_model.pre_tokenizer = pre_tokenizer
    alphabet = [chr(c) for c in range(33, 127)] + ["\u2581"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_pieces, initial_alphabet=alphabet, special_tokens=[], show_progress=False
    )
    sentences = training_sentences()
    trainer_model.train_from_iterator(sentences * 4, trainer)
    trained = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])}
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))

    tokenizer = llama_style_tokenizer(vocab, merges, model_max_length=4096)
    ids = tokenizer.convert_tokens_to_ids([FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE])
    assert ids == [len(tokenizer) - 3, len(tokenizer) - 2, len(tokenizer) - 1], ids
    return tokenizer


def build_processor(tokenizer: PreTrainedTokenizerFast) -> Idefics2Processor:
    image_processor = Idefics2ImageProcessorPil(
        do_image_splitting=True,
        size={"shortest_edge": SHORTEST_EDGE, "longest_edge": LONGEST_EDGE},
    )
    return Idefics2Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=N_LATENTS, chat_template=CHAT_TEMPLATE
    )


def build_config(tokenizer: PreTrainedTokenizerFast) -> Idefics2Config:
    text_hidden = 160
    return Idefics2Config(
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=False,
        use_cache=True,
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_channels": 3,
            "image_size": LONGEST_EDGE,
            "patch_size": PATCH_SIZE,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        perceiver_config={
            "hidden_act": "silu",
            "hidden_size": text_hidden,
            "rms_norm_eps": 1e-5,
            "resampler_n_latents": N_LATENTS,
            "resampler_depth": 2,
            "resampler_n_heads": 4,
            "resampler_head_dim": 32,
            "num_key_value_heads": 2,
        },
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": 384,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 40,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    )


# ---------------------------------------------------------------- synthetic pictures and conversations


def draw_picture(rng: random.Random, colour: str | None = None, shape: str | None = None):
    """One shape of a known colour on a neutral background; sizes 64-400 px, often not square."""
    colour = colour or rng.choice(list(COLOURS))
    shape = shape or rng.choice(SHAPES)
    width = rng.randint(64, 400)
    height = width if rng.random() < 0.3 else int(min(400, max(64, width * rng.uniform(0.5, 2.0))))
    grey = rng.randint(20, 235)
    background = tuple(int(np.clip(grey + rng.randint(-18, 18), 0, 255)) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    size = int(side * rng.uniform(0.35, 0.85))
    x0 = rng.randint(0, width - size)
    y0 = rng.randint(0, height - size)
    fill = tuple(int(np.clip(c + rng.randint(-20, 20), 0, 255)) for c in COLOURS[colour])
    box = (x0, y0, x0 + size - 1, y0 + size - 1)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size - 1), (x0 + size - 1, y0 + size - 1)], fill=fill)
    if rng.random() < 0.5:  # mild sensor noise so the tower does not rely on perfectly flat colours
        noise = np.random.default_rng(rng.randint(0, 2**31)).integers(-12, 13, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    return image, colour, shape


def user(text: str, with_image: bool = True) -> dict:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def describe(colour: str, shape: str) -> str:
    return f"In this image, we can see a {colour} {shape}."


def sample_conversation(rng: random.Random):
    """Return (messages ending with the assistant's target turn, images, indices of assistant turns to learn)."""
    task = rng.random()
    if task < 0.03:
        question, answer = rng.choice(TEXT_ONLY)
        return [user(question, with_image=False), assistant(answer)], [], [1]
    image, colour, shape = draw_picture(rng)
    if task < 0.33:
        return [user(rng.choice(COLOUR_QUESTIONS)), assistant(f"The shape is {colour}.")], [image], [1]
    if task < 0.43:
        return [user(rng.choice(DESCRIBE_QUESTIONS)), assistant(describe(colour, shape))], [image], [1]
    if task < 0.48:
        return [user(rng.choice(SHAPE_QUESTIONS)), assistant(f"It is a {shape}.")], [image], [1]
    # Blog-shaped two-picture conversation: the final answer must follow the LAST picture.
    colour2 = rng.choice([c for c in COLOURS if c != colour]) if rng.random() < 0.85 else colour
    image2, colour2, shape2 = draw_picture(rng, colour=colour2)
    if rng.random() < 0.7:
        first = [user(rng.choice(DESCRIBE_QUESTIONS)), assistant(describe(colour, shape))]
    else:
        first = [user(rng.choice(COLOUR_QUESTIONS)), assistant(f"The shape is {colour}.")]
    messages = [*first, user(rng.choice(FOLLOW_UP_QUESTIONS)), assistant(f"That is a {colour2} {shape2}.")]
    return messages, [image, image2], [1, 3]


def encode_conversation(processor, messages, images, learn_turns, splitting: bool) -> dict:
    """Tokenize like inference (chat template + processor) and mask everything but the assistant turns."""
    processor.image_processor.do_image_splitting = splitting
    full_text = processor.apply_chat_template(messages)
    enc = processor(text=full_text, images=images or None, return_tensors="pt")
    input_ids = enc["input_ids"][0]
    labels = torch.full_like(input_ids, -100)
    eou = processor.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    for turn in learn_turns:
        prefix = processor.apply_chat_template(messages[:turn], add_generation_prompt=True)
        prefix_ids = processor(text=prefix)["input_ids"][0]
        start = len(prefix_ids)
        assert input_ids[:start].tolist() == list(prefix_ids), "prompt tokenization is not prefix-stable"
        end = start + int((input_ids[start:] == eou).nonzero()[0])
        labels[start : end + 1] = input_ids[start : end + 1]  # the answer and its <end_of_utterance>
    out = {"input_ids": input_ids, "labels": labels}
    if images:
        out["pixel_values"] = enc["pixel_values"][0]
        out["pixel_attention_mask"] = enc["pixel_attention_mask"][0]
    return out


def collate(examples: list[dict]) -> dict:
    """Right-pad text (training only) and pad pictures with all-zero images, which Idefics2 drops."""
    length = max(len(e["input_ids"]) for e in examples)
    batch = len(examples)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), -100, dtype=torch.long)
    attention = torch.zeros(batch, length, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n], labels[i, :n], attention[i, :n] = e["input_ids"], e["labels"], 1
    out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    with_pixels = [e for e in examples if "pixel_values" in e]
    if with_pixels:
        n_img = max(e["pixel_values"].shape[0] for e in with_pixels)
        h = max(e["pixel_values"].shape[2] for e in with_pixels)
        w = max(e["pixel_values"].shape[3] for e in with_pixels)
        pixels = torch.zeros(batch, n_img, 3, h, w)
        mask = torch.zeros(batch, n_img, h, w, dtype=torch.long)
        for i, e in enumerate(examples):
            if "pixel_values" in e:
                k, _, eh, ew = e["pixel_values"].shape
                pixels[i, :k, :, :eh, :ew] = e["pixel_values"]
                mask[i, :k, :eh, :ew] = e["pixel_attention_mask"]
        out["pixel_values"], out["pixel_attention_mask"] = pixels, mask
    return out


# ---------------------------------------------------------------- training


def train(model, processor, *, steps: int, batch_size: int, lr: float, seed: int) -> float:
    rng = random.Random(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))),
    )
    model.train()
    started = time.time()
    running = None
    for step in range(steps):
        splitting = rng.random() >= 0.25  # a quarter of the batches without image splitting
        examples = [encode_conversation(processor, *sample_conversation(rng), splitting) for _ in range(batch_size)]
        batch = collate(examples)
        loss = model(**batch, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            log(
                f"step {step + 1}/{steps}  loss {running:.4f}  lr {schedule.get_last_lr()[0]:.2e}  "
                f"{time.time() - started:.0f}s"
            )
    processor.image_processor.do_image_splitting = True
    model.eval()
    return time.time() - started


# ---------------------------------------------------------------- demo assets


def write_demo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first = Image.new("RGB", (360, 270), (200, 200, 195))
    ImageDraw.Draw(first).ellipse((110, 60, 260, 210), fill=COLOURS["red"])
    first.save(folder / "first.png")
    # Stored as 400x300 with EXIF orientation 6 (rotate 90° clockwise): load_image shows it as 300x400.
    second = Image.new("RGB", (400, 300), (60, 60, 66))
    ImageDraw.Draw(second).rectangle((130, 70, 290, 230), fill=COLOURS["blue"])
    exif = Image.Exif()
    exif[0x0112] = 6
    second.save(folder / "second.jpg", quality=92, exif=exif.tobytes())
    conversation = [
        user("What do we see in this image?"),
        assistant(describe("red", "circle")),
        user("And how about this image? Which colour is that?"),
    ]
    (folder / "conversation.json").write_text(json.dumps(conversation, indent=2) + "\n")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/tiny-idefics2")
    parser.add_argument("--demo", default="assets/demo")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    model = Idefics2ForConditionalGeneration(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"vocab {len(tokenizer)}, image token {config.image_token_id}, parameters {n_params:,}")

    train_seconds = (
        train(model, processor, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        if args.steps
        else 0.0
    )
    log(f"training took {train_seconds:.0f}s")

    eou = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, eou], pad_token_id=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()  # keep the folder exactly what save_pretrained writes
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    write_demo(Path(args.demo))
    log(f"saved {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB) and {args.demo}")

    if not args.skip_eval:
        evaluator = Path(__file__).with_name("evaluate_tiny_model.py")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run([sys.executable, str(evaluator), "--model", str(out), "--demo", args.demo], check=True, env=env)


if __name__ == "__main__":
    main()
