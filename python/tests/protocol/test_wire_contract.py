"""The worker's parser accepts exactly what docs/wire-schema.json (generated from the SDK's zod schemas) allows.

Every case comes from the JSON file: for each field of each params object, the key left out, null, every enum value
and strings near them, each bound and just past it, and values of the wrong type. The schema decides whether the
changed document is valid (a small subset of JSON Schema 2020-12, standard library only); the parser must agree, and
refuse with the field's error code and a message naming it. A field added on one side only fails here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import REPO_ROOT

from idefics2_worker.protocol import params
from idefics2_worker.protocol.errors import WorkerError, to_protocol_error
from idefics2_worker.protocol.params import Quantization, parse_generate, parse_load
from idefics2_worker.protocol.results import GenerationResult, MemoryUse, ModelSummary, Timings, Usage

SCHEMA = json.loads((REPO_ROOT / "docs" / "wire-schema.json").read_text())
DEFS: dict[str, Any] = SCHEMA["$defs"]
MISSING: Any = object()


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A node with its `$ref` replaced by the definition (sibling keywords such as `default` kept)."""
    while "$ref" in node:
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        node = {**DEFS[node["$ref"].removeprefix("#/$defs/")], **siblings}
    return node


def _has_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"string": str, "array": list, "object": dict}[kind])


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and type(a) is not dict and a == b


def _as_python(pattern: str) -> str:
    """A JS pattern for Python's re: JS's `$` matches only at the very end, Python's also before a final newline."""
    return re.sub(r"(?<!\\)\$$", r"\\Z", pattern)


def conforms(value: Any, node: dict[str, Any]) -> bool:
    """Whether `value` is valid against `node` (the keywords zod emits; JSON has no NaN or infinities)."""
    node = resolve(node)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if "anyOf" in node and not any(conforms(value, option) for option in node["anyOf"]):
        return False
    if "oneOf" in node and sum(conforms(value, option) for option in node["oneOf"]) != 1:
        return False
    if "const" in node and not _same(value, node["const"]):
        return False
    if "enum" in node and not any(_same(value, choice) for choice in node["enum"]):
        return False
    kinds = node.get("type")
    if kinds is not None and not any(_has_type(value, kind) for kind in ([kinds] if isinstance(kinds, str) else kinds)):
        return False
    if _has_type(value, "number"):
        checks = [
            ("minimum", lambda bound: value >= bound),
            ("maximum", lambda bound: value <= bound),
            ("exclusiveMinimum", lambda bound: value > bound),
            ("exclusiveMaximum", lambda bound: value < bound),
        ]
        if not all(check(node[key]) for key, check in checks if key in node):
            return False
    if isinstance(value, str):
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", math.inf):
            return False
        if "pattern" in node and not re.search(_as_python(node["pattern"]), value):
            return False
    if isinstance(value, list):
        if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", math.inf):
            return False
        if "items" in node and not all(conforms(item, node["items"]) for item in value):
            return False
    if isinstance(value, dict):
        properties = node.get("properties", {})
        if any(key not in value for key in node.get("required", [])):
            return False
        if node.get("additionalProperties") is False and any(key not in properties for key in value):
            return False
        if not all(conforms(value[key], properties[key]) for key in value if key in properties):
            return False
        # A record (maxMemory): every key matches `propertyNames`, every value `additionalProperties`.
        if "propertyNames" in node and not all(conforms(key, node["propertyNames"]) for key in value):
            return False
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and not all(conforms(value[key], extra) for key in value if key not in properties):
            return False
    return True


def options_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a field allows, `$ref`s resolved."""
    node = resolve(node)
    return [resolve(option) for option in node["anyOf"]] if "anyOf" in node else [node]


# Documents the cases start from. Options ask for the most new tokens, so any minNewTokens in range is at most
# maxNewTokens (the one rule between option fields, which the schema cannot say).
_OPTIONS = {"maxNewTokens": DEFS["WireGenerationOptions"]["properties"]["maxNewTokens"]["maximum"]}
_TEXT_TURN = {"role": "user", "content": [{"type": "text", "text": "Which colour?"}]}
_IMAGE_TURN = {"role": "user", "content": [{"type": "image"}]}
LOAD_DOCUMENT = {"model": "HuggingFaceM4/idefics2-8b", "quantization": {}}
TEXT_DOCUMENT = {"messages": [_TEXT_TURN], "options": _OPTIONS}
IMAGE_DOCUMENT = {
    "messages": [_IMAGE_TURN],
    "images": [{"offset": 0, "length": 12, "width": 2, "height": 2}],
    "options": _OPTIONS,
}
GRAMMAR_DOCUMENT = {
    "messages": [_TEXT_TURN],
    "options": {**_OPTIONS, "grammar": {"type": "regex", "source": "(red|green)"}},
}
PAYLOAD_SIZE = 12


@dataclass(frozen=True)
class Target:
    """One params object: where it sits in a valid document, and the keys the parser knows for it."""

    definition: str
    root: str
    document: dict[str, Any]
    path: tuple[Any, ...]
    known_keys: tuple[str, ...]
    # Refusals the schema cannot predict: an image's bytes are checked against its size and the payload.
    beyond_schema: tuple[str, ...] = ()

    def parse(self, document: Any) -> Any:
        return parse_load(document) if self.root == "LoadParams" else parse_generate(document, PAYLOAD_SIZE)

    def code(self, key: str) -> str:
        """Load params and generation options are INVALID_OPTIONS; the rest of `generate` is INVALID_MESSAGES."""
        in_options = self.path[:1] == ("options",) or (self.path == () and key == "options")
        return "INVALID_OPTIONS" if self.root == "LoadParams" or in_options else "INVALID_MESSAGES"


TARGETS = [
    Target("LoadParams", "LoadParams", LOAD_DOCUMENT, (), params._LOAD_KEYS),
    Target("QuantizationParams", "LoadParams", LOAD_DOCUMENT, ("quantization",), params._QUANT_KEYS),
    Target("GenerateParams", "GenerateParams", TEXT_DOCUMENT, (), params._GENERATE_KEYS),
    Target("WireGenerationOptions", "GenerateParams", TEXT_DOCUMENT, ("options",), params._OPTION_KEYS),
    Target("WireGrammar", "GenerateParams", GRAMMAR_DOCUMENT, ("options", "grammar"), params._GRAMMAR_KEYS),
    Target("WireMessage", "GenerateParams", TEXT_DOCUMENT, ("messages", 0), params._MESSAGE_KEYS),
    Target("WireTextPart", "GenerateParams", TEXT_DOCUMENT, ("messages", 0, "content", 0), params._TEXT_PART_KEYS),
    Target("WireImagePart", "GenerateParams", IMAGE_DOCUMENT, ("messages", 0, "content", 0), params._IMAGE_PART_KEYS),
    Target("WireImage", "GenerateParams", IMAGE_DOCUMENT, ("images", 0), params._IMAGE_KEYS, ("IMAGE_UNREADABLE",)),
]


def at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def changed(document: dict[str, Any], path: tuple[Any, ...], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of `document` with `key` of the object at `path` set to `value`, or removed for MISSING."""
    copy = json.loads(json.dumps(document))
    target = at(copy, path)
    if value is MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    return copy


def _all_enum_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("enum", "const"):
                yield from (v for v in (value if key == "enum" else [value]) if isinstance(v, str))
            else:
                yield from _all_enum_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_enum_strings(item)


# Strings tried on every string field: every enum value in the schema, every string the parser names in a constant
# (so a value the parser accepts beyond the schema's enum is found), variants of them, and strings at the edges of
# the patterns (device indexes, blanks).
_PARSER_STRINGS = [
    item for value in vars(params).values() if isinstance(value, tuple) for item in value if isinstance(item, str)
]
_EDGE_STRINGS = [
    "",
    " ",
    "\t",
    "x",
    "cuda:0",
    "cuda:7",
    "cuda:10",
    "cuda:01",
    "cuda:-1",
    "cuda:1.5",
    "cuda:",
    "cuda:0\n",
    "0",
    "1",
    "12",
    "01",
    "10GiB",
    "1.5GB",
    "10gib",
    "10 GiB",
    "1e3GiB",
]
_STRINGS = sorted({*_all_enum_strings(SCHEMA), *_PARSER_STRINGS, *_EDGE_STRINGS})
_WRONG_TYPES = ["1", True, 1, 1.5, -1, [], {}, [None]]


def _number_cases(node: dict[str, Any]) -> list[Any]:
    integer = node["type"] == "integer"
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    cases: list[Any] = [math.nan, math.inf, -math.inf]
    for bound, outward in ((low, -math.inf), (high, math.inf)):
        if bound is None:
            continue
        if integer:
            cases += [bound, bound + (1 if outward > 0 else -1), bound + 0.5, str(bound)]
        else:
            cases += [bound, math.nextafter(bound, outward), math.nextafter(bound, -outward)]
    return cases


def _array_cases(node: dict[str, Any], existing: Any) -> list[Any]:
    """Lists at and just past the item-count bounds, built from an item already there or a valid string."""
    items = resolve(node.get("items", {}))
    if isinstance(existing, list) and existing:
        item = existing[0]
    elif items.get("type") == "string":
        item = "x" * max(1, items.get("minLength", 0))
    else:
        return [[]]
    counts = {0, node.get("minItems", 0) - 1, node.get("minItems", 0)}
    if "maxItems" in node:
        counts |= {node["maxItems"], node["maxItems"] + 1}
    cases: list[Any] = [[item] * count for count in sorted(counts) if count >= 0]
    # Items at and just past the longest a string item may be.
    cases += [[text] for text in _length_cases(items)]
    # A bad item: each wrong type in turn.
    return cases + [[bad] for bad in _WRONG_TYPES if not isinstance(bad, list)] + [[""]]


def _length_cases(node: dict[str, Any]) -> list[str]:
    """Strings at and just past a string's maximum length, when it has one."""
    if "maxLength" not in node:
        return []
    return ["x" * node["maxLength"], "x" * (node["maxLength"] + 1)]


def cases_for(node: dict[str, Any], existing: Any) -> list[Any]:
    """Values to try for one field, from what its schema says (the verdict on each comes from `conforms`)."""
    cases: list[Any] = [MISSING, None, *_WRONG_TYPES]
    for option in options_of(node):
        kind = option.get("type")
        if kind == "string" or "enum" in option or "const" in option:
            cases += _STRINGS + _length_cases(option)
            for value in [*option.get("enum", []), *([option["const"]] if "const" in option else [])]:
                cases += [value, f"{value}x", str(value).upper(), f" {value}"]
        if kind in ("integer", "number"):
            cases += _number_cases(option)
        if kind == "array":
            cases += _array_cases(option, existing)
        if kind == "object" and "propertyNames" in option:
            cases += _record_cases(option)
    return cases


def _record_cases(node: dict[str, Any]) -> list[Any]:
    """Records of one entry: every string tried as the key with a valid value, and every value case with a valid key."""
    keys, values = resolve(node["propertyNames"]), resolve(node["additionalProperties"])
    value_cases = [value for value in cases_for(values, None) if value is not MISSING]
    valid_key = next(key for key in _STRINGS if conforms(key, keys))
    valid_value = next(value for value in value_cases if conforms(value, values))
    return [{key: valid_value} for key in _STRINGS] + [{valid_key: value} for value in value_cases]


def _fields() -> Iterator[tuple[Target, str]]:
    for target in TARGETS:
        for key in DEFS[target.definition]["properties"]:
            yield target, key


def _case_id(value: Any) -> str:
    return "left out" if value is MISSING else repr(value)


@pytest.mark.parametrize(("target", "key"), list(_fields()), ids=lambda v: getattr(v, "definition", v))
def test_each_field_is_accepted_and_refused_exactly_as_the_schema_says(target: Target, key: str) -> None:
    node = DEFS[target.definition]["properties"][key]
    root = DEFS[target.root]
    existing = at(target.document, target.path).get(key)
    disagreements = []
    for value in cases_for(node, existing):
        document = changed(target.document, target.path, key, value)
        valid = conforms(document, root)
        try:
            target.parse(document)
            outcome = None
        except WorkerError as error:
            outcome = error
        if valid and outcome is not None and outcome.code not in target.beyond_schema:
            disagreements.append(f"{_case_id(value)}: valid by the schema, refused: {outcome.code} {outcome.message}")
        elif not valid and outcome is None:
            disagreements.append(f"{_case_id(value)}: invalid by the schema, accepted")
        elif not valid and outcome is not None and outcome.code != target.code(key):
            disagreements.append(f"{_case_id(value)}: refused with {outcome.code}, not {target.code(key)}")
        # An object may be refused for a field inside it; anything else is refused by name.
        elif not valid and outcome is not None and not isinstance(value, dict) and key not in outcome.message:
            disagreements.append(f"{_case_id(value)}: the refusal does not name `{key}`: {outcome.message}")
    assert not disagreements, f"{target.definition}.{key}:\n" + "\n".join(disagreements)


@pytest.mark.parametrize(("target", "key"), list(_fields()), ids=lambda v: getattr(v, "definition", v))
def test_a_field_left_out_means_its_default(target: Target, key: str) -> None:
    node = DEFS[target.definition]["properties"][key]
    if "default" not in node:
        assert key in DEFS[target.definition].get("required", []), f"{key} is optional but has no default"
        return
    left_out = target.parse(changed(target.document, target.path, key, MISSING))
    given = target.parse(changed(target.document, target.path, key, node["default"]))
    assert left_out == given


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.definition)
def test_the_parser_knows_exactly_the_schemas_keys_and_refuses_others(target: Target) -> None:
    definition = DEFS[target.definition]
    assert sorted(target.known_keys) == sorted(definition["properties"])
    assert definition.get("additionalProperties") is False
    document = changed(target.document, target.path, "unknownKey", 1)
    with pytest.raises(WorkerError, match="unknownKey") as refused:
        target.parse(document)
    assert refused.value.code == target.code("unknownKey")


def _referenced(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"].removeprefix("#/$defs/")
        for value in node.values():
            yield from _referenced(value)
    elif isinstance(node, list):
        for item in node:
            yield from _referenced(item)


def test_every_params_object_in_the_schema_is_checked_here() -> None:
    reached, pending = set(), [ref["$ref"].removeprefix("#/$defs/") for ref in _method_params()]
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending.extend(_referenced(DEFS[name]))
    with_fields = {name for name in reached if DEFS[name].get("properties")}
    assert with_fields == {target.definition for target in TARGETS}
    # Params-free methods (ping, info, releaseMemory) take an empty object.
    assert all(DEFS[name]["properties"] == {} for name in reached - with_fields)


def _method_params() -> list[dict[str, str]]:
    return [method["params"] for method in SCHEMA["x-methods"].values()]


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.definition)
def test_the_documents_the_cases_start_from_are_valid(target: Target) -> None:
    assert conforms(target.document, DEFS[target.root])
    target.parse(target.document)


def test_the_subset_validator_refuses_what_it_should() -> None:
    # The oracle itself, on a few values whose verdict is plain.
    seed = DEFS["WireGenerationOptions"]["properties"]["seed"]
    assert conforms(2**53 - 1, seed)
    assert not conforms(2**53, seed)
    assert not conforms(True, seed)
    assert conforms(None, seed)
    device = DEFS["LoadParams"]["properties"]["deviceMap"]
    assert [conforms(v, device) for v in ("cuda:3", "cuda:03", "cpu", {"": "cpu"})] == [True, False, True, False]


# Results: what the worker sends must be what the SDK's schemas accept, with no key the SDK does not know.

QUANTIZATION = Quantization("4bit", quant_type="nf4", double_quant=True, compute_dtype="bfloat16")
SUMMARY = ModelSummary(
    model="/models/tiny",
    device="cpu",
    dtype="float32",
    quantization=QUANTIZATION,
    load_seconds=1.5,
    parameters=1234,
    image_seq_len=64,
    do_image_splitting=True,
    longest_edge=980,
    max_context=4096,
    image_token_id=32001,
    eos_token_ids=[2, 32002],
    decoder="reference",
    max_batch_size=8,
)
GENERATED = GenerationResult(
    text="Blue.",
    token_ids=[5, 6, 2],
    finish_reason="stop",
    usage=Usage(prompt_tokens=10, image_tokens=64, completion_tokens=3),
    timings=Timings(started=0.0, preprocessed=0.1, first_token=0.3, finished=0.5, tokens=3),
)


def _closed(value: dict[str, Any], definition: str) -> list[str]:
    """Keys the definition does not declare, here and in its nested objects."""
    node = resolve({"$ref": f"#/$defs/{definition}"})
    unknown = [f"{definition}.{key}" for key in value if key not in node.get("properties", {})]
    for key, item in value.items():
        refs = list(_referenced(node.get("properties", {}).get(key, {})))
        if isinstance(item, dict) and refs:
            unknown += _closed(item, refs[0])
    return unknown


@pytest.mark.parametrize(
    ("definition", "make"),
    [
        ("LoadResult", lambda: SUMMARY.to_wire(MemoryUse(10, 20, 30))),
        ("LoadResult", lambda: SUMMARY.to_wire(MemoryUse(10, None, 0))),
        ("GenerateResult", GENERATED.to_wire),
        ("WorkerErrorPayload", lambda: to_protocol_error(WorkerError("INVALID_OPTIONS", "bad", "fix it"))),
    ],
)
def test_results_the_worker_sends_match_the_schema(definition: str, make: Callable[[], dict[str, Any]]) -> None:
    wire = json.loads(json.dumps(make()))
    assert conforms(wire, DEFS[definition])
    assert _closed(wire, definition) == []


# Beyond what JSON Schema says: every string a caller sends must be well-formed Unicode. A lone surrogate ("\ud800",
# which JSON can carry) is no character; the SDK refuses it first, and the worker refuses it too, by field name.

LONE_SURROGATES = ["\ud800", "/nonexistent/\ud800", "a\udfffb", "\udbff"]


def _takes_strings(node: dict[str, Any]) -> tuple[bool, bool]:
    """(accepts a string, accepts a list of strings), from the field's schema."""
    options = options_of(node)
    string = any(option.get("type") == "string" or "enum" in option or "const" in option for option in options)
    strings = any(
        option.get("type") == "array" and resolve(option.get("items", {})).get("type") == "string" for option in options
    )
    return string, strings


@pytest.mark.parametrize(("target", "key"), list(_fields()), ids=lambda v: getattr(v, "definition", v))
def test_a_lone_surrogate_is_refused_in_every_string_field_by_name(target: Target, key: str) -> None:
    string, strings = _takes_strings(DEFS[target.definition]["properties"][key])
    values = [*(LONE_SURROGATES if string else []), *([[text] for text in LONE_SURROGATES] if strings else [])]
    for value in values:
        with pytest.raises(WorkerError) as refused:
            target.parse(changed(target.document, target.path, key, value))
        assert refused.value.code == target.code(key), refused.value.message
        assert key in refused.value.message
        # The message itself can be sent: it holds no lone surrogate.
        refused.value.message.encode("utf-8")


def test_well_formed_text_beyond_the_basic_plane_is_accepted() -> None:
    emoji = "\U0001f600 é 中"
    parse_generate(changed(TEXT_DOCUMENT, ("messages", 0, "content", 0), "text", emoji), PAYLOAD_SIZE)
    parse_generate(changed(TEXT_DOCUMENT, ("options",), "stopStrings", [emoji]), PAYLOAD_SIZE)
    parse_load(changed(LOAD_DOCUMENT, (), "model", f"/models/{emoji}"))
