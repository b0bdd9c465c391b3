"""Wire params (camelCase JSON) to checked domain values; every message names the field and the value received.

The contract is docs/wire-schema.json, generated from the SDK's zod schemas (src/protocol/messages.ts);
tests/protocol/test_wire_contract.py holds this parser to it field by field. A key left out takes its default,
`null` is accepted only where the contract allows it, and unknown keys are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import WorkerError

QUANT_MODES = ("none", "8bit", "4bit")
QUANT_TYPES = ("nf4", "fp4")
DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# Every plain attn_implementation transformers 5.17 accepts for Idefics2; `paged|...` needs transformers' continuous
# batching and hub kernel ids fetch code at load, so neither is offered.
ATTN_IMPLEMENTATIONS = (
    "eager",
    "sdpa",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "flex_attention",
)
DEVICE_NAMES = ("auto", "cpu", "cuda")
# One CUDA device by index; torch refuses an index with leading zeros.
_CUDA_DEVICE = re.compile(r"cuda:(0|[1-9][0-9]*)", re.ASCII)
_NOT_BLANK = re.compile(r"\S")
# accelerate's max_memory: a CUDA index or "cpu" to bytes, or to a number with one of accelerate's units (a lower-case
# "b", which accelerate reads as bits, is not one).
_MAX_MEMORY_DEVICE = re.compile(r"cpu|0|[1-9][0-9]*", re.ASCII)
_MEMORY_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(GiB|MiB|KiB|GB|MB|KB)", re.ASCII)
MEMORY_UNITS = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3}
# Half of a UTF-16 surrogate pair, alone: JSON can carry one ("\\ud800") but it is no character, and encoding it
# (a file name, the tokenizer) fails. Every string a caller sends is checked for one.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
ROLES = ("user", "assistant", "system")
DECODERS = ("auto", "fast", "reference")

# The SDK's integers are JS numbers, exact up to 2^53 - 1; no wire integer goes past that.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_BATCH_LIMIT = 64
MAX_LONGEST_EDGE = 65_536
MAX_NEW_TOKENS_LIMIT = 1_000_000
MAX_BEAMS = 64
# transformers' StopStringCriteria compares every vocabulary token with every position of every stop string before
# the first step, and matches all of them at each step: the SDK's bounds (src/protocol/option-ranges.ts) keep that to
# seconds for a 32,000-token vocabulary.
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_LENGTH = 32
# Logits are divided by these: below 1e-4 a float32 logit can overflow to inf and sampling fails on NaN.
MIN_TEMPERATURE = 1e-4
MAX_TEMPERATURE = 100.0
MIN_REPETITION_PENALTY = 1e-4
MAX_REPETITION_PENALTY = 100.0
# Structured output: a JSON Schema (as JSON text) or a regular expression the answer must match, compiled by
# llguidance against the model's tokenizer (request/grammar.py). The bound keeps one request's compile to seconds.
GRAMMAR_TYPES = ("json_schema", "regex")
MAX_GRAMMAR_SOURCE = 100_000

_REQUIRED: Any = object()


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} ({type(value).__name__})"


def _fail_option(name: str, expected: str, value: Any) -> WorkerError:
    return WorkerError("INVALID_OPTIONS", f"Expected the `{name}` option to be {expected}, got {_describe(value)}")


def _fail_message(name: str, expected: str, value: Any) -> WorkerError:
    return WorkerError("INVALID_MESSAGES", f"Expected `{name}` to be {expected}, got {_describe(value)}")


_WELL_FORMED = "well-formed Unicode (no lone surrogate)"


def _well_formed(value: str) -> bool:
    return _LONE_SURROGATE.search(value) is None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(where: str, given: dict[str, Any], known: tuple[str, ...], code: str = "INVALID_OPTIONS") -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise WorkerError(code, f"Unknown {where} key(s) {unknown}; expected some of {sorted(known)}")


def _field(given: dict[str, Any], key: str, default: Any, name: str, code: str = "INVALID_OPTIONS") -> Any:
    """The value under `key`, or `default` when the key is left out; a key without a default must be present."""
    if key in given:
        return given[key]
    if default is _REQUIRED:
        raise WorkerError(code, f"`{name}` is required but was left out")
    return default


def _object(name: str, value: Any, code: str = "INVALID_OPTIONS") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WorkerError(code, f"Expected `{name}` to be an object, got {_describe(value)}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...], *, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or value not in choices:
        expected = "one of " + ", ".join(repr(c) for c in choices) + (" or null" if nullable else "")
        raise _fail_option(name, expected, value)
    return value


def _bool(name: str, value: Any, *, nullable: bool = False) -> bool | None:
    if value is None and nullable:
        return None
    if not isinstance(value, bool):
        raise _fail_option(name, "a boolean" + (" or null" if nullable else ""), value)
    return value


def _int(name: str, value: Any, minimum: int, maximum: int = MAX_SAFE_INTEGER, *, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        expected = f"an integer ≥ {minimum} and ≤ {maximum}" + (" or null" if nullable else "")
        raise _fail_option(name, expected, value)
    return value


def _float(
    name: str, value: Any, *, above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> float | None:
    """A finite number within the bounds, or null (every number option is nullable)."""
    if value is None:
        return None
    in_range = _is_number(value) and (
        (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (at_most is None or value <= at_most)
    )
    if not in_range:
        bounds = [f"> {above}"] if above is not None else []
        bounds += [f"≥ {at_least}"] if at_least is not None else []
        bounds += [f"≤ {at_most}"] if at_most is not None else []
        raise _fail_option(name, "a finite number " + " and ".join(bounds) + " or null", value)
    return float(value)


def _strings(
    name: str, value: Any, *, min_items: int = 0, max_items: int = MAX_SAFE_INTEGER, max_length: int | None = None
) -> tuple[str, ...] | None:
    """Null, or a list of an allowed length of non-empty, well-formed strings, each at most `max_length` long."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not min_items <= len(value) <= max_items
        or not all(isinstance(item, str) and 0 < len(item) <= (max_length or len(item)) for item in value)
    ):
        items = f"{min_items} to {max_items}" if max_items < MAX_SAFE_INTEGER else f"{min_items} or more"
        each = f" of at most {max_length} characters" if max_length is not None else ""
        raise _fail_option(name, f"null or a list of {items} non-empty strings{each}", value)
    if not all(_well_formed(item) for item in value):
        raise _fail_option(name, f"a list of strings in {_WELL_FORMED}", value)
    return tuple(value)


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
    device_map: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    do_image_splitting: bool | None = None
    longest_edge: int | None = None
    trust_remote_code: bool = False
    local_files_only: bool = False
    decoder: str = "auto"
    max_batch_size: int = 8
    # from_pretrained's max_memory as (device, bytes) pairs: a CUDA index or "cpu"; None leaves accelerate's limits.
    max_memory: tuple[tuple[int | str, int], ...] | None = None
    # The fast decoder computes each request's tokens independently of what shares its batch (batch-invariant kernels).
    deterministic: bool = False

    def max_memory_kwarg(self) -> dict[int | str, int] | None:
        """`max_memory` as from_pretrained takes it, or None."""
        return dict(self.max_memory) if self.max_memory else None


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
    "maxMemory",
    "deterministic",
)
_QUANT_KEYS = ("mode", "quantType", "doubleQuant", "computeDtype", "skipModules", "int8Threshold")


def _quantization(raw: Any) -> Quantization:
    given = _object("quantization", raw)
    _check_keys("quantization", given, _QUANT_KEYS)

    def field(key: str, default: Any = None) -> Any:
        return _field(given, key, default, f"quantization.{key}")

    return Quantization(
        mode=_choice("quantization.mode", field("mode", "none"), QUANT_MODES),
        quant_type=_choice("quantization.quantType", field("quantType"), QUANT_TYPES, nullable=True),
        double_quant=bool(_bool("quantization.doubleQuant", field("doubleQuant"), nullable=True)),
        compute_dtype=_choice("quantization.computeDtype", field("computeDtype"), COMPUTE_DTYPES, nullable=True),
        skip_modules=_strings("quantization.skipModules", field("skipModules")),
        int8_threshold=_float("quantization.int8Threshold", field("int8Threshold"), at_least=0.0),
    )


def _device_map(value: Any) -> str:
    if isinstance(value, str) and (value in DEVICE_NAMES or _CUDA_DEVICE.fullmatch(value)):
        return value
    raise _fail_option("deviceMap", "'auto', 'cpu', 'cuda' or 'cuda:N' (N without leading zeros)", value)


_MAX_MEMORY_EXPECTED = "null or an object of CUDA index or 'cpu' to memory, such as {'0': '10GiB', 'cpu': '30GiB'}"
_MEMORY_SIZE_EXPECTED = "bytes (an integer ≥ 0 and ≤ 2^53 - 1) or a number with a unit, such as '10GiB' or '500MB'"


def _memory_size(name: str, value: Any) -> int:
    if _is_int(value) and 0 <= value <= MAX_SAFE_INTEGER:
        return int(value)
    matched = _MEMORY_SIZE.fullmatch(value) if isinstance(value, str) else None
    if matched is None:
        raise _fail_option(name, _MEMORY_SIZE_EXPECTED, value)
    # Decimal, not float: a number of many digits stays finite and exact.
    return int(Decimal(matched.group(1)) * MEMORY_UNITS[matched.group(2)])


def _max_memory(value: Any) -> tuple[tuple[int | str, int], ...] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail_option("maxMemory", _MAX_MEMORY_EXPECTED, value)
    limits: list[tuple[int | str, int]] = []
    for device, size in value.items():
        if not isinstance(device, str) or not _MAX_MEMORY_DEVICE.fullmatch(device):
            raise _fail_option(
                "maxMemory", "keyed by CUDA indexes ('0', '1', … without leading zeros) or 'cpu'", device
            )
        limits.append((device if device == "cpu" else int(device), _memory_size(f"maxMemory.{device}", size)))
    return tuple(limits) or None


def _model(value: Any) -> str:
    if not isinstance(value, str) or not _NOT_BLANK.search(value):
        raise _fail_option("model", "a model folder or hub id (not blank)", value)
    if not _well_formed(value):
        raise _fail_option("model", f"a model folder or hub id in {_WELL_FORMED}", value)
    return value


def _revision(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail_option("revision", "null or a non-empty string", value)
    if value is not None and not _well_formed(value):
        raise _fail_option("revision", f"a string in {_WELL_FORMED}", value)
    return value


def parse_load(raw: Any) -> LoadParams:
    """Checks `load` params; the defaults are the reference program's."""
    given = _object("load params", raw)
    _check_keys("load params", given, _LOAD_KEYS)

    def field(key: str, default: Any = None) -> Any:
        return _field(given, key, default, key)

    params = LoadParams(
        model=_model(field("model", _REQUIRED)),
        revision=_revision(field("revision")),
        quantization=_quantization(field("quantization", {})),
        device_map=_device_map(field("deviceMap", "auto")),
        dtype=_choice("dtype", field("dtype", "auto"), DTYPES),
        attn_implementation=_choice(
            "attnImplementation", field("attnImplementation"), ATTN_IMPLEMENTATIONS, nullable=True
        ),
        do_image_splitting=_bool("doImageSplitting", field("doImageSplitting"), nullable=True),
        longest_edge=_int("longestEdge", field("longestEdge"), 1, MAX_LONGEST_EDGE, nullable=True),
        trust_remote_code=bool(_bool("trustRemoteCode", field("trustRemoteCode", False))),
        local_files_only=bool(_bool("localFilesOnly", field("localFilesOnly", False))),
        decoder=_choice("decoder", field("decoder", "auto"), DECODERS),
        max_batch_size=_int("maxBatchSize", field("maxBatchSize", 8), 1, MAX_BATCH_LIMIT),
        max_memory=_max_memory(field("maxMemory")),
        deterministic=bool(_bool("deterministic", field("deterministic", False))),
    )
    # accelerate applies max_memory only where it places the model itself.
    if params.max_memory is not None and params.device_map != "auto":
        raise WorkerError(
            "INVALID_OPTIONS",
            f"The `maxMemory` option bounds deviceMap 'auto' only, but deviceMap is {params.device_map!r}",
            "Use deviceMap 'auto' with maxMemory, or leave maxMemory out.",
        )
    return params


@dataclass(frozen=True)
class ImageSpec:
    offset: int
    length: int
    width: int
    height: int


@dataclass(frozen=True)
class GrammarSpec:
    """What the answer must be: `json_schema` (the schema as JSON text) or `regex` (the whole answer matches)."""

    type: str
    source: str


@dataclass(frozen=True)
class GenerateParams:
    messages: list[dict[str, Any]]
    images: list[ImageSpec]
    generate_kwargs: dict[str, Any]
    seed: int | None
    stream: bool
    # A chat session's turn: the prompt plus up to max_new_tokens must fit the context, not only the prompt.
    reserve_new_tokens: bool = False
    # Structured output: the answer is constrained to this grammar (null: free text).
    grammar: GrammarSpec | None = None


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
_OPTION_KEYS = (*_OPTION_KWARGS, "seed", "grammar")
_GRAMMAR_KEYS = ("type", "source")
_GENERATE_KEYS = ("messages", "images", "options", "stream", "reserveNewTokens")
_MESSAGE_KEYS = ("role", "content")
_IMAGE_PART_KEYS = ("type",)
_TEXT_PART_KEYS = ("type", "text")
_IMAGE_KEYS = ("offset", "length", "width", "height")


def _grammar(raw: Any) -> GrammarSpec | None:
    if raw is None:
        return None
    given = _object("grammar", raw)
    _check_keys("grammar", given, _GRAMMAR_KEYS)
    kind = _choice("grammar.type", _field(given, "type", _REQUIRED, "grammar.type"), GRAMMAR_TYPES)
    source = _field(given, "source", _REQUIRED, "grammar.source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_GRAMMAR_SOURCE:
        raise _fail_option("grammar.source", f"a string of 1 to {MAX_GRAMMAR_SOURCE} characters", source)
    if not _well_formed(source):
        raise _fail_option("grammar.source", f"a string in {_WELL_FORMED}", source)
    return GrammarSpec(kind, source)


def _options(raw: Any) -> tuple[dict[str, Any], int | None, GrammarSpec | None]:
    given = _object("options", raw)
    _check_keys("options", given, _OPTION_KEYS)

    def field(key: str, default: Any = None) -> Any:
        return _field(given, key, default, key)

    stop = _strings(
        "stopStrings", field("stopStrings"), min_items=1, max_items=MAX_STOP_STRINGS, max_length=MAX_STOP_STRING_LENGTH
    )
    checked = {
        "maxNewTokens": _int("maxNewTokens", field("maxNewTokens", _REQUIRED), 1, MAX_NEW_TOKENS_LIMIT),
        "minNewTokens": _int("minNewTokens", field("minNewTokens"), 0, MAX_NEW_TOKENS_LIMIT, nullable=True),
        "doSample": _bool("doSample", field("doSample"), nullable=True),
        "temperature": _float("temperature", field("temperature"), at_least=MIN_TEMPERATURE, at_most=MAX_TEMPERATURE),
        "topP": _float("topP", field("topP"), above=0.0, at_most=1.0),
        "topK": _int("topK", field("topK"), 0, nullable=True),
        "repetitionPenalty": _float(
            "repetitionPenalty",
            field("repetitionPenalty"),
            at_least=MIN_REPETITION_PENALTY,
            at_most=MAX_REPETITION_PENALTY,
        ),
        "noRepeatNgramSize": _int("noRepeatNgramSize", field("noRepeatNgramSize"), 0, nullable=True),
        "numBeams": _int("numBeams", field("numBeams"), 1, MAX_BEAMS, nullable=True),
        "stopStrings": list(stop) if stop is not None else None,
    }
    min_new, max_new = checked["minNewTokens"], checked["maxNewTokens"]
    if min_new is not None and min_new > max_new:
        raise _fail_option("minNewTokens", f"at most maxNewTokens ({max_new})", min_new)
    # Null options are left out so the model's generation config decides them, as in the reference.
    kwargs = {_OPTION_KWARGS[name]: value for name, value in checked.items() if value is not None}
    return kwargs, _int("seed", field("seed"), 0, nullable=True), _grammar(field("grammar"))


def _message_object(where: str, value: Any, known: tuple[str, ...]) -> dict[str, Any]:
    given = _object(where, value, code="INVALID_MESSAGES")
    _check_keys(where, given, known, code="INVALID_MESSAGES")
    return given


def _part(where: str, part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "image":
        _message_object(where, part, _IMAGE_PART_KEYS)
        return {"type": "image"}
    if kind == "text" and isinstance(part.get("text"), str):
        _message_object(where, part, _TEXT_PART_KEYS)
        if not _well_formed(part["text"]):
            raise _fail_message(f"{where}.text", f"text in {_WELL_FORMED}", part["text"])
        return {"type": "text", "text": part["text"]}
    raise _fail_message(where, "{type: 'image'} or {type: 'text', text: string}", part)


def _messages(raw: Any) -> tuple[list[dict[str, Any]], int]:
    if not isinstance(raw, list) or not raw:
        raise _fail_message("messages", "a non-empty list", raw)
    messages, image_parts = [], 0
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        given = _message_object(where, message, _MESSAGE_KEYS)
        role = _field(given, "role", _REQUIRED, f"{where}.role", "INVALID_MESSAGES")
        content = _field(given, "content", _REQUIRED, f"{where}.content", "INVALID_MESSAGES")
        if not isinstance(role, str) or role not in ROLES:
            raise _fail_message(f"{where}.role", f"one of {list(ROLES)}", role)
        if not isinstance(content, list) or not content:
            raise _fail_message(f"{where}.content", "a non-empty list of parts", content)
        parts = [_part(f"{where}.content[{i}]", part) for i, part in enumerate(content)]
        image_parts += sum(part["type"] == "image" for part in parts)
        messages.append({"role": role, "content": parts})
    return messages, image_parts


def _image(where: str, item: Any, payload_size: int) -> ImageSpec:
    given = _message_object(where, item, _IMAGE_KEYS)
    values = []
    for key, minimum in (("offset", 0), ("length", 0), ("width", 1), ("height", 1)):
        value = _field(given, key, _REQUIRED, f"{where}.{key}", "INVALID_MESSAGES")
        if not _is_int(value) or not minimum <= value <= MAX_SAFE_INTEGER:
            raise _fail_message(f"{where}.{key}", f"an integer ≥ {minimum} and ≤ {MAX_SAFE_INTEGER}", value)
        values.append(value)
    spec = ImageSpec(*values)
    # What the schema cannot say: the bytes must be exactly the pixels, and inside the payload.
    if spec.length != spec.width * spec.height * 3:
        raise WorkerError(
            "IMAGE_UNREADABLE",
            f"{where} is {spec.width}x{spec.height} RGB, which is {spec.width * spec.height * 3} bytes, "
            f"but its length is {spec.length}",
        )
    if spec.offset + spec.length > payload_size:
        raise WorkerError(
            "IMAGE_UNREADABLE",
            f"{where} ends at byte {spec.offset + spec.length} but the payload has {payload_size} bytes",
        )
    return spec


def _images(raw: Any, payload_size: int) -> list[ImageSpec]:
    if not isinstance(raw, list):
        raise _fail_message("images", "a list", raw)
    return [_image(f"images[{index}]", item, payload_size) for index, item in enumerate(raw)]


def _flag(given: dict[str, Any], key: str) -> bool:
    """A boolean generate param, false when left out."""
    value = _field(given, key, False, key, "INVALID_MESSAGES")
    if not isinstance(value, bool):
        raise _fail_message(key, "a boolean", value)
    return value


def parse_generate(raw: Any, payload_size: int) -> GenerateParams:
    """Checks `generate` params against each other and the payload."""
    given = _object("generate params", raw, code="INVALID_MESSAGES")
    _check_keys("generate params", given, _GENERATE_KEYS, code="INVALID_MESSAGES")
    messages, image_parts = _messages(_field(given, "messages", _REQUIRED, "messages", "INVALID_MESSAGES"))
    images = _images(_field(given, "images", [], "images", "INVALID_MESSAGES"), payload_size)
    if image_parts != len(images):
        raise WorkerError(
            "INVALID_MESSAGES",
            f"The messages have {image_parts} image part(s) but {len(images)} image(s) were sent; "
            "each {type: 'image'} part needs exactly one image, in order",
        )
    kwargs, seed, grammar = _options(_field(given, "options", _REQUIRED, "options"))
    stream = _flag(given, "stream")
    reserve = _flag(given, "reserveNewTokens")
    return GenerateParams(
        messages=messages,
        images=images,
        generate_kwargs=kwargs,
        seed=seed,
        stream=stream,
        reserve_new_tokens=reserve,
        grammar=grammar,
    )
