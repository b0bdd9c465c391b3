"""Wire params (camelCase JSON) to checked domain values; every message names the field and the value received."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import WorkerError

QUANT_MODES = ("none", "8bit", "4bit")
QUANT_TYPES = ("nf4", "fp4")
DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
ROLES = ("user", "assistant", "system")
DECODERS = ("auto", "fast", "reference")
MAX_BATCH_LIMIT = 64
_MAX_SEED = 2**64 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} ({type(value).__name__})"


def _fail_option(name: str, expected: str, value: Any) -> WorkerError:
    return WorkerError("INVALID_OPTIONS", f"Expected the `{name}` option to be {expected}, got {_describe(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # noqa: PLR0124


def _check_keys(where: str, given: dict[str, Any], known: tuple[str, ...], code: str = "INVALID_OPTIONS") -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise WorkerError(code, f"Unknown {where} key(s) {unknown}; expected some of {sorted(known)}")


def _object(name: str, value: Any, code: str = "INVALID_OPTIONS") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WorkerError(code, f"Expected `{name}` to be an object, got {_describe(value)}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail_option(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def _optional_choice(name: str, value: Any, choices: tuple[str, ...]) -> str | None:
    return None if value is None else _choice(name, value, choices)


def _bool(name: str, value: Any, default: bool | None) -> bool | None:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail_option(name, "a boolean", value)
    return value


def _int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"an integer ≥ {minimum}" + (f" and ≤ {maximum}" if maximum is not None else "")
        raise _fail_option(name, bound, value)
    return value


def _float(name: str, value: Any, *, above: float, at_most: float | None = None) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value <= above or (at_most is not None and value > at_most):
        bound = f"a number > {above}" + (f" and ≤ {at_most}" if at_most is not None else "")
        raise _fail_option(name, bound, value)
    return float(value)


@dataclass(frozen=True)
class Quantization:
    mode: str = "none"
    quant_type: str | None = None
    double_quant: bool = False
    compute_dtype: str | None = None
    skip_modules: tuple[str, ...] | None = None
    int8_threshold: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "quantType": self.quant_type,
            "doubleQuant": self.double_quant,
            "computeDtype": self.compute_dtype,
            "skipModules": list(self.skip_modules) if self.skip_modules is not None else None,
            "int8Threshold": self.int8_threshold,
        }


@dataclass(frozen=True)
class LoadParams:
    model: str
    revision: str | None = None
    quantization: Quantization = Quantization()
    device_map: str | dict[str, Any] | None = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    do_image_splitting: bool | None = None
    longest_edge: int | None = None
    trust_remote_code: bool = False
    local_files_only: bool = False
    decoder: str = "auto"
    max_batch_size: int = 8


_LOAD_KEYS = (
    "model",
    "revision",
    "quantization",
    "deviceMap",
    "dtype",
    "attnImplementation",
    "doImageSplitting",
    "longestEdge",
    "trustRemoteCode",
    "localFilesOnly",
    "decoder",
    "maxBatchSize",
)
_QUANT_KEYS = ("mode", "quantType", "doubleQuant", "computeDtype", "skipModules", "int8Threshold")


def _quantization(raw: Any) -> Quantization:
    given = _object("quantization", raw)
    _check_keys("quantization", given, _QUANT_KEYS)
    skip = given.get("skipModules")
    if skip is not None and (not isinstance(skip, list) or not all(isinstance(m, str) and m for m in skip)):
        raise _fail_option("quantization.skipModules", "null or a list of module names", skip)
    threshold = given.get("int8Threshold")
    if threshold is not None and (not _is_number(threshold) or threshold < 0):
        raise _fail_option("quantization.int8Threshold", "a number ≥ 0", threshold)
    return Quantization(
        mode=_choice("quantization.mode", given.get("mode", "none"), QUANT_MODES),
        quant_type=_optional_choice("quantization.quantType", given.get("quantType"), QUANT_TYPES),
        double_quant=bool(_bool("quantization.doubleQuant", given.get("doubleQuant"), False)),
        compute_dtype=_optional_choice("quantization.computeDtype", given.get("computeDtype"), COMPUTE_DTYPES),
        skip_modules=tuple(skip) if skip is not None else None,
        int8_threshold=float(threshold) if threshold is not None else None,
    )


def _device_map(raw: Any) -> str | dict[str, Any] | None:
    if raw is None or (isinstance(raw, str) and raw):
        return raw
    if isinstance(raw, dict) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in raw.values()):
        return raw
    raise _fail_option("deviceMap", "a device string ('auto', 'cpu', 'cuda:0') or a module→device object", raw)


def parse_load(raw: Any) -> LoadParams:
    """Checks `load` params; the defaults are the reference program's."""
    given = _object("load params", raw)
    _check_keys("load params", given, _LOAD_KEYS)
    model = given.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail_option("model", "a non-empty model id or path", model)
    revision = given.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise _fail_option("revision", "null or a non-empty string", revision)
    return LoadParams(
        model=model,
        revision=revision,
        quantization=_quantization(given.get("quantization")),
        device_map=_device_map(given.get("deviceMap", "auto")),
        dtype=_choice("dtype", given.get("dtype") or "auto", DTYPES),
        attn_implementation=_optional_choice(
            "attnImplementation", given.get("attnImplementation"), ATTN_IMPLEMENTATIONS
        ),
        do_image_splitting=_bool("doImageSplitting", given.get("doImageSplitting"), None),
        longest_edge=_int("longestEdge", given.get("longestEdge"), 1, 1 << 16),
        trust_remote_code=bool(_bool("trustRemoteCode", given.get("trustRemoteCode"), False)),
        local_files_only=bool(_bool("localFilesOnly", given.get("localFilesOnly"), False)),
        decoder=_choice("decoder", given.get("decoder") or "auto", DECODERS),
        max_batch_size=_int("maxBatchSize", given.get("maxBatchSize"), 1, MAX_BATCH_LIMIT) or 8,
    )


@dataclass(frozen=True)
class ImageSpec:
    offset: int
    length: int
    width: int
    height: int


@dataclass(frozen=True)
class GenerateParams:
    messages: list[dict[str, Any]]
    images: list[ImageSpec]
    generate_kwargs: dict[str, Any]
    seed: int | None
    stream: bool


# Wire option name → transformers generate() kwarg.
_OPTION_KWARGS = {
    "maxNewTokens": "max_new_tokens",
    "minNewTokens": "min_new_tokens",
    "doSample": "do_sample",
    "temperature": "temperature",
    "topP": "top_p",
    "topK": "top_k",
    "repetitionPenalty": "repetition_penalty",
    "noRepeatNgramSize": "no_repeat_ngram_size",
    "numBeams": "num_beams",
    "stopStrings": "stop_strings",
}
_OPTION_KEYS = (*_OPTION_KWARGS, "seed")


def _options(raw: Any) -> tuple[dict[str, Any], int | None]:
    given = _object("options", raw)
    _check_keys("options", given, _OPTION_KEYS)
    stop = given.get("stopStrings")
    if stop is not None and (not isinstance(stop, list) or not stop or not all(isinstance(s, str) and s for s in stop)):
        raise _fail_option("stopStrings", "null or a non-empty list of non-empty strings", stop)
    checked = {
        "maxNewTokens": _int("maxNewTokens", given.get("maxNewTokens"), 1),
        "minNewTokens": _int("minNewTokens", given.get("minNewTokens"), 0),
        "doSample": _bool("doSample", given.get("doSample"), None),
        "temperature": _float("temperature", given.get("temperature"), above=0.0),
        "topP": _float("topP", given.get("topP"), above=0.0, at_most=1.0),
        "topK": _int("topK", given.get("topK"), 0),
        "repetitionPenalty": _float("repetitionPenalty", given.get("repetitionPenalty"), above=0.0),
        "noRepeatNgramSize": _int("noRepeatNgramSize", given.get("noRepeatNgramSize"), 0),
        "numBeams": _int("numBeams", given.get("numBeams"), 1),
        "stopStrings": list(stop) if stop is not None else None,
    }
    min_new, max_new = checked["minNewTokens"], checked["maxNewTokens"]
    if min_new is not None and max_new is not None and min_new > max_new:
        raise _fail_option("minNewTokens", f"at most maxNewTokens ({max_new})", min_new)
    # Null options are left out so the model's generation config decides them, as in the reference.
    kwargs = {_OPTION_KWARGS[name]: value for name, value in checked.items() if value is not None}
    return kwargs, _int("seed", given.get("seed"), 0, _MAX_SEED)


def _messages(raw: Any) -> tuple[list[dict[str, Any]], int]:
    if not isinstance(raw, list) or not raw:
        raise WorkerError("INVALID_MESSAGES", f"Expected `messages` to be a non-empty list, got {_describe(raw)}")
    messages, image_parts = [], 0
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise WorkerError("INVALID_MESSAGES", f"Expected {where} to be an object, got {_describe(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise WorkerError("INVALID_MESSAGES", f"Expected {where}.role to be one of {list(ROLES)}, got {role!r}")
        if not isinstance(content, list) or not content:
            raise WorkerError("INVALID_MESSAGES", f"Expected {where}.content to be a non-empty list of parts")
        parts = []
        for part_index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                image_parts += 1
                parts.append({"type": "image"})
            elif kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise WorkerError(
                    "INVALID_MESSAGES",
                    f"Expected {where}.content[{part_index}] to be {{type: 'image'}} or {{type: 'text', text}}, "
                    f"got {_describe(part)}",
                )
        messages.append({"role": role, "content": parts})
    return messages, image_parts


def _images(raw: Any, payload_size: int) -> list[ImageSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise WorkerError("INVALID_MESSAGES", f"Expected `images` to be a list, got {_describe(raw)}")
    specs = []
    for index, item in enumerate(raw):
        fields = [item.get(k) if isinstance(item, dict) else None for k in ("offset", "length", "width", "height")]
        if not all(_is_int(v) for v in fields) or fields[0] < 0 or fields[2] < 1 or fields[3] < 1:
            raise WorkerError(
                "IMAGE_UNREADABLE", f"images[{index}] needs integer offset ≥ 0, length, width ≥ 1, height ≥ 1"
            )
        spec = ImageSpec(*fields)
        if spec.length != spec.width * spec.height * 3:
            raise WorkerError(
                "IMAGE_UNREADABLE",
                f"images[{index}] is {spec.width}x{spec.height} RGB, which is {spec.width * spec.height * 3} bytes, "
                f"but its length is {spec.length}",
            )
        if spec.offset + spec.length > payload_size:
            raise WorkerError(
                "IMAGE_UNREADABLE",
                f"images[{index}] ends at byte {spec.offset + spec.length} but the payload has {payload_size} bytes",
            )
        specs.append(spec)
    return specs


def parse_generate(raw: Any, payload_size: int) -> GenerateParams:
    """Checks `generate` params against each other and the payload."""
    given = _object("generate params", raw, code="INVALID_MESSAGES")
    _check_keys("generate params", given, ("messages", "images", "options", "stream"), code="INVALID_MESSAGES")
    messages, image_parts = _messages(given.get("messages"))
    images = _images(given.get("images"), payload_size)
    if image_parts != len(images):
        raise WorkerError(
            "INVALID_MESSAGES",
            f"The messages have {image_parts} image part(s) but {len(images)} image(s) were sent; "
            "each {type: 'image'} part needs exactly one image, in order",
        )
    kwargs, seed = _options(given.get("options"))
    stream = _bool("stream", given.get("stream"), False)
    return GenerateParams(messages=messages, images=images, generate_kwargs=kwargs, seed=seed, stream=bool(stream))
