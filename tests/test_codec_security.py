"""Checkpoint decoding is safe on untrusted input: a stored row never makes PocoFlow import
a module or call a name unless that type is allowed (built in, registered, or encoded by
this process), and malformed rows are CheckpointDecodeErrors naming the key."""

from __future__ import annotations

import builtins
import dataclasses
import enum
import importlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocoflow import (
    CheckpointDecodeError,
    CheckpointEncodeError,
    Flow,
    Node,
    Pause,
    Store,
    WorkflowDB,
)
from pocoflow.persistence import codec
from pocoflow.persistence.codec import (
    decode_object,
    decode_state,
    decode_value,
    encode_value,
    register_type,
    register_types,
)

ROOT = Path(__file__).resolve().parents[1]
HERE = __name__  # the module path checkpoints name for the classes below


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclasses.dataclass
class Ticket:
    title: str
    level: Level = Level.LOW


class Owner(pydantic.BaseModel):
    name: str


class Where(PurePosixPath):
    """A PurePath subclass (its own class path in checkpoints)."""


@dataclasses.dataclass
class Tripwire:
    """A dataclass that counts every construction, to prove a refused row called nothing."""

    built: ClassVar[int] = 0
    value: Any = None

    def __post_init__(self) -> None:
        Tripwire.built += 1


#: one value per tag that names a class
CLASS_TAGGED: dict[str, Any] = {
    "enum": Level.HIGH,
    "dataclass": Ticket("printer on fire", Level.HIGH),
    "pydantic": Owner(name="Ada"),
    "path": Where("/srv/data"),
}


@pytest.fixture
def fresh_allow_list(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """The allow-list as a new process has it: built-in types only (restored afterwards)."""
    allowed = {name: cls for name, cls in codec._ALLOWED.items()
               if cls.__module__.startswith("pathlib")}
    monkeypatch.setattr(codec, "_ALLOWED", allowed)
    return allowed


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A file that any code run from a hostile row would create; it must never appear."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a stored row ran code"


def evil_rows(marker: Path) -> dict[str, dict[str, Any]]:
    """Rows that ran a command with the codec that imported and called stored names."""
    touch = f"touch {marker}"
    shell = f"__import__('os').system({touch!r})"
    return {
        "enum-popen": {"__pf__": "enum", "cls": "subprocess:Popen", "v": ["touch", str(marker)]},
        "enum-os-system": {"__pf__": "enum", "cls": "os:system", "v": touch},
        "enum-eval": {"__pf__": "enum", "cls": "builtins:eval", "v": shell},
        "path-os-system": {"__pf__": "path", "cls": "os:system", "v": touch},
        "path-posix-system": {"__pf__": "path", "cls": "posix:system", "v": touch},
        "path-exec": {"__pf__": "path", "cls": "builtins:exec", "v": shell},
        "path-getoutput": {"__pf__": "path", "cls": "subprocess:getoutput", "v": touch},
        "dataclass-popen": {"__pf__": "dataclass", "cls": "subprocess:Popen",
                            "fields": {"args": ["touch", str(marker)]}},
        "pydantic-eval": {"__pf__": "pydantic", "cls": "builtins:eval", "data": shell},
        "nested-in-a-set": {"__pf__": "set", "items": [
            {"__pf__": "enum", "cls": "os:system", "v": touch}]},
        "nested-in-an-allowed-dataclass": {"__pf__": "dataclass", "cls": f"{HERE}:Tripwire",
                                           "fields": {"value": {"__pf__": "enum",
                                                                "cls": "os:system", "v": touch}}},
    }


EVIL_IDS = list(evil_rows(Path("x")))


# ── hostile rows ────────────────────────────────────────────────────────────


@pytest.mark.parametrize("row_id", EVIL_IDS)
def test_hostile_row_is_refused_and_runs_nothing(row_id: str, marker: Path) -> None:
    """A row naming subprocess.Popen, os.system, eval, ... as a class raises
    CheckpointDecodeError naming the key and the stored type; no command runs, even though
    allow_pickle is off and those names are importable."""
    register_type(Tripwire)
    row = evil_rows(marker)[row_id]
    built = Tripwire.built
    with pytest.raises(CheckpointDecodeError) as caught:
        decode_object(row, key="invoice")
    message = str(caught.value)
    assert "'invoice'" in message
    assert "not an allowed type" in message
    assert "nothing was imported or run" in message
    assert built == Tripwire.built


def test_hostile_row_imports_nothing(monkeypatch: pytest.MonkeyPatch, marker: Path) -> None:
    """Decoding a hostile row never calls importlib.import_module or __import__ with a
    stored name (it looks types up in the allow-list only)."""
    imported: list[str] = []
    real_import = builtins.__import__

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import(name, *args, **kwargs)

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the codec imported {name!r}")

    monkeypatch.setattr(builtins, "__import__", spy)
    monkeypatch.setattr(importlib, "import_module", refuse)
    for row in evil_rows(marker).values():
        with pytest.raises(CheckpointDecodeError):
            decode_object(row, key="k")
    assert [] == [name for name in imported if name in {"subprocess", "os", "posix", "builtins"}]


@pytest.mark.parametrize("tag", ["enum", "path", "dataclass", "pydantic"])
def test_module_with_import_side_effects_is_never_imported(
        tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row naming a class in an importable module whose import has side effects is
    refused without importing it: its marker file never appears, it is not in
    sys.modules. (The trap works: importing the module by hand does write the marker.)"""
    name = f"pf_side_effect_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "class Thing:\n    pass\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    row = {"__pf__": tag, "cls": f"{name}:Thing", "v": "x", "fields": {}, "data": {}}

    with pytest.raises(CheckpointDecodeError, match=name):
        decode_value(json.dumps(row), key="k")
    assert not marker.exists()
    assert name not in sys.modules

    importlib.import_module(name)  # the control: the module is importable, and writes
    monkeypatch.delitem(sys.modules, name)
    assert marker.exists()


def test_refusal_message_names_key_type_and_the_register_call(
        fresh_allow_list: dict[str, type]) -> None:
    """The error says which key, which type as stored, and the exact call that allows it."""
    text = json.dumps({"__pf__": "enum", "cls": "billing.models:Invoice.Status", "v": 1})
    with pytest.raises(CheckpointDecodeError) as caught:
        decode_value(text, key="invoice")
    message = str(caught.value)
    assert message.startswith("Checkpoint: store key 'invoice' holds an enum of type "
                              "'billing.models:Invoice.Status', which is not an allowed type")
    assert ("from billing.models import Invoice; pocoflow.register_type(Invoice.Status)"
            in message)


def test_refusal_message_without_a_key_and_with_a_strange_name() -> None:
    """Without a key the message still names the type; a stored name that is no Python path
    is quoted (repr), cut short, and gets no made-up import line."""
    name = "x\n" + "y" * 1000 + ":<locals>"
    with pytest.raises(CheckpointDecodeError) as caught:
        decode_object({"__pf__": "enum", "cls": name, "v": 1})
    message = str(caught.value)
    assert message.startswith("Checkpoint holds an enum of type 'x\\ny")
    assert "\n" not in message
    assert len(message) < 800
    assert "pocoflow.register_type(TheClass)" in message


# ── what is allowed ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("tag", list(CLASS_TAGGED))
def test_class_tag_is_refused_in_a_new_process_until_registered(
        tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value whose tag names a class decodes, once the allow-list knows that class: a
    fresh allow-list refuses it with the register call, register_type allows it."""
    value = CLASS_TAGGED[tag]
    text = encode_value(value, "k")
    assert tag == json.loads(text)["__pf__"]
    monkeypatch.setattr(codec, "_ALLOWED", {n: c for n, c in codec._ALLOWED.items()
                                            if c.__module__.startswith("pathlib")})

    with pytest.raises(CheckpointDecodeError) as caught:
        decode_value(text, key="k")
    cls = type(value)
    assert f"from {HERE} import {cls.__name__}; pocoflow.register_type({cls.__name__})" in \
        str(caught.value)

    register_types(Level, cls)
    back = decode_value(text, key="k")
    assert value == back
    assert cls is type(back)


@pytest.mark.parametrize("tag", list(CLASS_TAGGED))
def test_a_class_this_process_encoded_is_allowed(
        tag: str, fresh_allow_list: dict[str, type]) -> None:
    """Encoding a value allows its class: the process that wrote a checkpoint reads it
    back with no registration."""
    value = CLASS_TAGGED[tag]
    row = json.loads(encode_value(value, "k"))
    fresh_allow_list.clear()
    with pytest.raises(CheckpointDecodeError):
        decode_object(row, key="k")

    encode_value(value, "k")
    assert value == decode_object(row, key="k")


def test_builtin_path_classes_need_no_registration(fresh_allow_list: dict[str, type]) -> None:
    """pathlib's classes are the codec's own, also under the names other Python versions
    write (pathlib._local in 3.13), and a path row without a class is a Path."""
    for name in ("pathlib:PurePosixPath", "pathlib._local:PurePosixPath"):
        assert PurePosixPath("/a") == decode_object({"__pf__": "path", "cls": name, "v": "/a"})
    assert Path("rel") == decode_object({"__pf__": "path", "v": "rel"})


def test_register_type_is_a_class_decorator(fresh_allow_list: dict[str, type]) -> None:
    """@register_type returns the class itself and allows it, here a class defined in a
    function (its qualname has <locals>, so no import could ever find it)."""

    @register_type
    @dataclasses.dataclass
    class Local:
        n: int

    assert "Local" == Local.__name__
    row = {"__pf__": "dataclass", "cls": f"{HERE}:{Local.__qualname__}", "fields": {"n": 3}}
    assert Local(3) == decode_object(row)


def test_register_types_is_all_or_nothing(fresh_allow_list: dict[str, type]) -> None:
    """register_types with one class that cannot be registered raises TypeError and
    registers none of them."""
    with pytest.raises(TypeError, match="object"):
        register_types(Level, object)
    assert f"{HERE}:Level" not in fresh_allow_list
    register_types(Level, Ticket)
    assert {f"{HERE}:Level", f"{HERE}:Ticket"} <= set(fresh_allow_list)


@pytest.mark.parametrize("thing", [subprocess.Popen, os.system, eval, object, Ticket("x"), "a:b"],
                         ids=["Popen", "os.system", "eval", "object", "an-instance", "a-str"])
def test_register_type_refuses_what_checkpoints_cannot_hold(thing: Any) -> None:
    """Only dataclasses, pydantic models, Enums and PurePaths can be registered: anything
    else (Popen, a function, an instance, a name) is a TypeError saying so."""
    with pytest.raises(TypeError, match="register_type"):
        register_type(thing)


WRONG_KIND = {
    "enum-names-a-dataclass": {"__pf__": "enum", "cls": f"{HERE}:Tripwire", "v": 1},
    "path-names-a-dataclass": {"__pf__": "path", "cls": f"{HERE}:Tripwire", "v": "/x"},
    "pydantic-names-a-dataclass": {"__pf__": "pydantic", "cls": f"{HERE}:Tripwire",
                                   "data": {"value": 1}},
    "dataclass-names-an-enum": {"__pf__": "dataclass", "cls": f"{HERE}:Level", "fields": {}},
    "enum-names-a-path": {"__pf__": "enum", "cls": "pathlib:Path", "v": "/x"},
    "path-names-a-model": {"__pf__": "path", "cls": f"{HERE}:Owner", "v": "/x"},
    "dataclass-names-a-model": {"__pf__": "dataclass", "cls": f"{HERE}:Owner", "fields": {}},
}


@pytest.mark.parametrize("row", list(WRONG_KIND.values()), ids=list(WRONG_KIND))
def test_allowed_class_of_the_wrong_kind_is_refused_before_any_call(row: dict[str, Any]) -> None:
    """An allowed class named by a tag of another kind (an enum tag naming a dataclass, ...)
    is refused before it is called."""
    register_types(Tripwire, Level, Owner)
    built = Tripwire.built
    with pytest.raises(CheckpointDecodeError, match="but that allowed class is not one"):
        decode_object(row, key="k")
    assert built == Tripwire.built


def test_dataclass_row_cannot_set_fields_the_class_does_not_declare() -> None:
    """A dataclass row may only fill the class's declared fields: an extra name (such as
    __class__ or __dict__) is refused, not set on the object."""
    register_type(Ticket)
    for extra in ("__class__", "__dict__", "gone"):
        row = {"__pf__": "dataclass", "cls": f"{HERE}:Ticket",
               "fields": {"title": "t", extra: {}}}
        with pytest.raises(CheckpointDecodeError, match=repr(extra)):
            decode_object(row, key="k")


# ── malformed rows ──────────────────────────────────────────────────────────

TAGS = [*codec._DECODERS, "pickle"]

MALFORMED = {
    "tag-not-a-str": {"__pf__": ["enum"]},
    "tag-none": {"__pf__": None, "v": 1},
    "unknown-tag": {"__pf__": "from_the_future", "v": 1},
    "v-a-number": {"__pf__": "datetime", "v": 20240101},
    "v-a-list-for-uuid": {"__pf__": "uuid", "v": ["x"]},
    "v-bad-date": {"__pf__": "date", "v": "yesterday"},
    "bad-base64": {"__pf__": "bytes", "v": "not base64!"},
    "bad-decimal": {"__pf__": "decimal", "v": "one"},
    "timedelta-too-big": {"__pf__": "timedelta", "v": [10**12, 0, 0]},
    "timedelta-strings": {"__pf__": "timedelta", "v": ["1", "2", "3"]},
    "complex-from-text": {"__pf__": "complex", "v": ["1+2j"]},
    "items-a-str": {"__pf__": "tuple", "items": "abc"},
    "dict-items-not-pairs": {"__pf__": "dict", "items": [[1, 2, 3]]},
    "dict-unhashable-key": {"__pf__": "dict", "items": [[[1], 2]]},
    "set-unhashable-item": {"__pf__": "set", "items": [{"a": 1}]},
    "zone-traversal": {"__pf__": "datetime", "v": "2024-01-01T00:00:00+00:00",
                       "tz": "../../../etc/passwd"},
    "zone-unknown": {"__pf__": "datetime", "v": "2024-01-01T00:00:00+00:00", "tz": "Mars/Base"},
    "zone-a-folder": {"__pf__": "datetime", "v": "2024-01-01T00:00:00+00:00", "tz": "America"},
    "cls-not-a-str": {"__pf__": "enum", "cls": ["subprocess", "Popen"], "v": 1},
    "fields-a-list": {"__pf__": "dataclass", "cls": f"{HERE}:Ticket", "fields": ["title"]},
    "fields-missing-required": {"__pf__": "dataclass", "cls": f"{HERE}:Ticket", "fields": {}},
    "enum-bad-value": {"__pf__": "enum", "cls": f"{HERE}:Level", "v": "medium"},
    "enum-no-value": {"__pf__": "enum", "cls": f"{HERE}:Level"},
    "pydantic-invalid": {"__pf__": "pydantic", "cls": f"{HERE}:Owner", "data": {"name": [1]}},
    "pydantic-no-data": {"__pf__": "pydantic", "cls": f"{HERE}:Owner"},
    "path-v-a-number": {"__pf__": "path", "v": 7},
    "windows-path-here": {"__pf__": "path", "cls": "pathlib:WindowsPath", "v": "C:\\x"},
    **{f"{tag}-bare": {"__pf__": tag} for tag in TAGS},
}


@pytest.mark.parametrize("row", list(MALFORMED.values()), ids=list(MALFORMED))
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_malformed_row_is_a_decode_error_naming_the_key(row: dict[str, Any],
                                                        allow_pickle: bool) -> None:
    """A tagged object with a missing or mistyped field is a CheckpointDecodeError naming
    the key, never a KeyError, TypeError or other error escaping from the codec."""
    if os.name == "nt" and "windows" in str(row):
        pytest.skip("WindowsPath exists on Windows")
    register_types(Ticket, Level, Owner)
    with pytest.raises(CheckpointDecodeError, match="'ledger'"):
        decode_object({"outer": [row]}, key="ledger", allow_pickle=allow_pickle)


def test_class_refusing_to_rebuild_keeps_its_error_as_the_cause() -> None:
    """When an allowed class's own code rejects the stored data, the CheckpointDecodeError
    carries that exception as its cause (for debugging)."""
    register_type(Owner)
    with pytest.raises(CheckpointDecodeError) as caught:
        decode_object({"__pf__": "pydantic", "cls": f"{HERE}:Owner", "data": {}}, key="k")
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)


def nest(depth: int, leaf: Any, wrap: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


DEEP = {
    "lists": lambda n: nest(n, 0, lambda x: [x]),
    "dicts": lambda n: nest(n, 0, lambda x: {"a": x}),
    "tuples": lambda n: nest(n, 0, lambda x: {"__pf__": "tuple", "items": [x]}),
    "dict-keys": lambda n: nest(n, 0, lambda x: {"__pf__": "dict", "items": [[1, x]]}),
}


@pytest.mark.parametrize("make", list(DEEP.values()), ids=list(DEEP))
def test_deeply_nested_input_is_a_decode_error(make: Any) -> None:
    """Input nested deeper than Python can recurse is a CheckpointDecodeError naming the key
    (as parsed objects, and as text), not a RecursionError."""
    deep = make(sys.getrecursionlimit() * 2)
    with pytest.raises(CheckpointDecodeError, match="'k'"):
        decode_object(deep, key="k")
    text = "[" * 200_000 + "]" * 200_000
    with pytest.raises(CheckpointDecodeError, match="'k'"):
        decode_value(text, key="k")


@pytest.mark.parametrize("text", ["1" * 5000, "{", "", '{"__pf__":"set","items":[1,]}', "NaN x"])
def test_text_that_is_not_checkpoint_json_is_a_decode_error(text: str) -> None:
    """Text the JSON parser rejects (broken, or an int with more than 4300 digits) is a
    CheckpointDecodeError naming the key."""
    with pytest.raises(CheckpointDecodeError, match=r"'k'.*not valid checkpoint JSON"):
        decode_value(text, key="k")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)
NAMES = st.sampled_from([f"{HERE}:Ticket", f"{HERE}:Level", f"{HERE}:Owner", f"{HERE}:Where",
                         "pathlib:PurePath", "subprocess:Popen", "os:system"])
ROW = st.fixed_dictionaries(
    {"__pf__": st.sampled_from(TAGS)},
    optional={"v": JSON | st.text(max_size=30), "items": JSON, "cls": NAMES | JSON,
              "fields": st.dictionaries(st.sampled_from(["title", "level", "x"]), JSON),
              "data": JSON, "tz": st.sampled_from(["UTC", "Europe/Paris", "", "x/../y"]) | JSON},
)


@settings(max_examples=500, deadline=None)
@given(st.recursive(ROW, lambda inner: st.lists(inner, max_size=3)
                    | st.fixed_dictionaries({"__pf__": st.sampled_from(["tuple", "set"]),
                                             "items": st.lists(inner, max_size=3)}),
                    max_leaves=6))
def test_any_tagged_garbage_decodes_or_is_a_decode_error(row: Any) -> None:
    """Whatever mix of tags and fields a row holds, decoding returns a value or raises
    CheckpointDecodeError; nothing else escapes."""
    register_types(Ticket, Level, Owner, Where)
    try:
        decode_object(row, key="k")
    except CheckpointDecodeError as exc:
        error = str(exc)
    else:
        error = "decoded: 'k'"
    assert "'k'" in error


# ── the encoder side ────────────────────────────────────────────────────────


@pytest.mark.parametrize("value", [10**5000, [1, 10**5000], {10**5000: "x"},
                                   Ticket(title=10**5000)],  # type: ignore[arg-type]
                         ids=["int", "in-a-list", "a-dict-key", "in-a-dataclass"])
def test_int_too_long_for_text_is_an_encode_error_naming_the_key(value: Any) -> None:
    """An int with more digits than Python writes as text raises CheckpointEncodeError (a
    TypeError) naming the key and the fix, wherever it sits in the value."""
    with pytest.raises(CheckpointEncodeError, match=r"'population'.*Decimal"):
        encode_value(value, "population")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"),
                                   [1.5, float("nan")], {"score": float("-inf")}])
def test_nan_and_infinity_round_trip_as_python_json_writes_them(value: Any) -> None:
    """NaN and ±Infinity are kept (documented choice): written as the NaN/Infinity tokens
    Python's json writes, read back as the same floats."""
    text = encode_value(value, "k")
    assert json.dumps(value, separators=(",", ":")) == text
    assert repr(value) == repr(decode_value(text, key="k"))


def test_nan_and_infinity_round_trip_through_the_database(db_url: str) -> None:
    """A checkpoint holding NaN and ±Infinity loads back on SQLite and PostgreSQL
    (store_json is a text column, not jsonb)."""
    db = WorkflowDB(db_url)
    db.create_run("nan-run", "codec")
    db.save_checkpoint("nan-run", 0, "node", {"x": [float("nan"), float("inf"), -float("inf")]})
    assert "[nan, inf, -inf]" == repr(db.load_checkpoint("nan-run", 0)["x"])


def test_decode_state_names_the_failing_key() -> None:
    """decode_state decodes a whole parsed checkpoint; an error names the key it failed on."""
    state = {"ok": {"__pf__": "tuple", "items": [1]}, "bad": {"__pf__": "enum",
                                                              "cls": "os:system", "v": "id"}}
    assert {"ok": (1,)} == decode_state({"ok": state["ok"]})
    with pytest.raises(CheckpointDecodeError, match="store key 'bad'"):
        decode_state(state)


# ── through the public API ──────────────────────────────────────────────────

USER_TYPES = '''
import dataclasses
import enum


class Status(enum.Enum):
    OPEN = "open"
    SHIPPED = "shipped"


@dataclasses.dataclass
class Order:
    id: int
    status: Status
    lines: tuple
'''


def run_python(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter that imports pocoflow from this checkout and the
    user's modules from *folder*."""
    path = os.pathsep.join([str(ROOT), str(folder), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=folder,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_new_process_loads_user_types_only_once_registered(tmp_path: Path) -> None:
    """A checkpoint holding a user dataclass and enum, loaded by a fresh process: refused
    with a clear error (and the user's module not even imported) without registration;
    loaded exactly with register_types, or with @register_type on the classes."""
    module = f"pf_user_types_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(USER_TYPES, encoding="utf-8")
    decorated = f"{module}_decorated"
    (tmp_path / f"{decorated}.py").write_text(
        "from pocoflow.persistence.codec import register_type\n" + USER_TYPES
        .replace("class Status", "@register_type\nclass Status")
        .replace("@dataclasses.dataclass", "@register_type\n@dataclasses.dataclass"),
        encoding="utf-8")
    db_path = tmp_path / "orders.db"
    save = f"""
        from pocoflow import WorkflowDB
        from {module} import Order, Status
        import {decorated}
        db = WorkflowDB({str(db_path)!r})
        for run, types in (("r1", __import__({module!r})), ("r2", {decorated})):
            db.create_run(run, "orders")
            db.save_checkpoint(run, 0, "ship", {{
                "order": types.Order(7, types.Status.SHIPPED, ("pen", 2)), "note": "ok"}})
    """
    done = run_python(save, tmp_path)
    assert 0 == done.returncode, done.stderr

    refused = run_python(f"""
        import sys
        from pocoflow import CheckpointDecodeError, WorkflowDB
        try:
            WorkflowDB({str(db_path)!r}).load_checkpoint("r1", 0)
        except CheckpointDecodeError as exc:
            print(exc)
        print({module!r} in sys.modules)
    """, tmp_path)
    assert 0 == refused.returncode, refused.stderr
    message, imported = refused.stdout.strip().splitlines()
    assert "False" == imported
    assert f"'{module}:Order'" in message
    assert f"from {module} import Order; pocoflow.register_type(Order)" in message

    for run, setup in (("r1", f"import {module} as m; register_types(m.Order, m.Status)"),
                       ("r2", f"import {decorated}")):
        loaded = run_python(f"""
            from pocoflow import WorkflowDB
            from pocoflow.persistence.codec import register_types
            {setup}
            store = WorkflowDB({str(db_path)!r}).load_checkpoint({run!r}, 0)
            order = store["order"]
            print(type(order).__name__, order.id, order.status.name, order.lines, store["note"])
        """, tmp_path)
        assert 0 == loaded.returncode, loaded.stderr
        assert "Order 7 SHIPPED ('pen', 2) ok" == loaded.stdout.strip()


def tamper_sqlite(path: Path, run_id: str, store_json: str) -> None:
    """Overwrite every checkpoint row of *run_id* with *store_json*, as an attacker with
    write access to the database file would."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pf_checkpoints SET store_json = ?, kind = 'full' WHERE run_id = ?",
                     (store_json, run_id))
    conn.close()


@pytest.mark.parametrize("row_id", ["enum-popen", "path-os-system", "dataclass-popen",
                                    "pydantic-eval", "nested-in-a-set"])
def test_tampered_checkpoint_row_is_refused_and_runs_nothing(row_id: str, tmp_path: Path,
                                                             marker: Path) -> None:
    """A hostile row written into pf_checkpoints.store_json with sqlite3 makes
    load_checkpoint raise CheckpointDecodeError naming the key; no command runs."""
    path = tmp_path / "runs.db"
    db = WorkflowDB(str(path))
    db.create_run("victim", "f")
    db.save_checkpoint("victim", 0, "node", {"plain": 1, "invoice": "ok"})
    evil = json.dumps({"plain": 1, "invoice": evil_rows(marker)[row_id]})
    tamper_sqlite(path, "victim", evil)

    with pytest.raises(CheckpointDecodeError, match="not an allowed type"):
        WorkflowDB(str(path)).load_checkpoint("victim", 0)
    with pytest.raises(CheckpointDecodeError, match="not an allowed type"):
        WorkflowDB(str(path), allow_pickle=True).load_checkpoint("victim", 0)


def test_tampered_checkpoint_row_is_refused_on_every_backend(db_url: str, marker: Path) -> None:
    """The same refusal on SQLite and PostgreSQL, the row rewritten through SQL."""
    from sqlalchemy import text

    from pocoflow.persistence.connect import create_db_engine, to_url

    db = WorkflowDB(db_url)
    db.create_run("victim", "f")
    db.save_checkpoint("victim", 0, "node", {"invoice": "ok"})
    engine = create_db_engine(to_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE pf_checkpoints SET store_json = :j WHERE run_id = 'victim'"),
                         {"j": json.dumps({"invoice": evil_rows(marker)["enum-popen"]})})
    finally:
        engine.dispose()
    with pytest.raises(CheckpointDecodeError, match="'subprocess:Popen'"):
        db.load_checkpoint("victim", 0)


class Prepare(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["invoice"] = "draft"


class Approve(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if "approved" not in store:
            raise Pause("needs approval")


def test_resume_of_a_tampered_run_is_refused_and_runs_nothing(tmp_path: Path,
                                                               marker: Path) -> None:
    """Resuming a paused run whose checkpoint rows were rewritten with a hostile value
    raises CheckpointDecodeError naming the key; no command runs, no node runs."""
    path = tmp_path / "runs.db"

    def flow() -> Flow:
        prepare = Prepare()
        prepare.then("default", Approve())
        return Flow(prepare, db_path=str(path), flow_name="approval")

    flow().run({})
    [run] = WorkflowDB(str(path)).list_runs()
    assert "paused" == run["status"]
    tamper_sqlite(path, run["run_id"], json.dumps({"invoice": evil_rows(marker)["enum-popen"]}))

    with pytest.raises(CheckpointDecodeError, match="'subprocess:Popen'"):
        flow().resume(run["run_id"], updates={"approved": True})


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than json.loads can recurse


class FirstFails(Node):
    fail = True

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if FirstFails.fail:
            raise ConnectionError("down")
        store["done"] = True


def test_stored_json_nested_too_deep_is_a_clear_error_or_ignored(tmp_path: Path) -> None:
    """Text in the database nested deeper than json.loads can go (another program wrote
    it, or an attacker): a checkpoint or a run's input is a CheckpointDecodeError naming
    the run; a flow_start event's detail (the input's left-out keys) is ignored. Each was
    a bare RecursionError naming nothing."""
    path = tmp_path / "runs.db"
    db = WorkflowDB(str(path))
    db.create_run("deep", "f")
    db.save_checkpoint("deep", 0, "node", {"plain": 1})
    tamper_sqlite(path, "deep", DEEP)
    with pytest.raises(CheckpointDecodeError, match="run 'deep' at step 0 is not valid"):
        db.load_checkpoint("deep", 0)

    flow = Flow(FirstFails(), db_path=str(path), run_id="early")
    FirstFails.fail = True
    with pytest.raises(ConnectionError):
        flow.run({"x": 1})
    FirstFails.fail = False
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pf_events SET detail = ? WHERE run_id = 'early'", (DEEP,))
    conn.close()
    assert {"x": 1, "done": True} == flow.resume("early").as_dict()

    FirstFails.fail = True
    flow = Flow(FirstFails(), db_path=str(path), run_id="early-input")
    with pytest.raises(ConnectionError):
        flow.run({"x": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pf_run_inputs SET input_json = ? WHERE run_id = 'early-input'",
                     (DEEP,))
    conn.close()
    with pytest.raises(CheckpointDecodeError, match="input of run 'early-input'"):
        flow.resume("early-input")


@pytest.mark.parametrize("excluded", [DEEP, '"abc"', '{"k": 1}', "[1, null]", "not json"])
def test_a_tampered_excluded_column_names_no_keys(tmp_path: Path, excluded: str) -> None:
    """pf_checkpoints.excluded rewritten with what is not a list of key names: the
    checkpoint still loads, its store with no transient keys (it was json.loads'ed
    as it came: a RecursionError, or a str taken as its letters)."""
    path = tmp_path / "runs.db"
    db = WorkflowDB(str(path))
    db.create_run("r", "f")
    db.save_checkpoint("r", 0, "node", {"plain": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE pf_checkpoints SET excluded = ? WHERE run_id = 'r'", (excluded,))
    conn.close()
    store = db.load_checkpoint("r", 0)
    assert ({"plain": 1}, set()) == (store.as_dict(), set(store.transient))


def test_store_restore_of_a_tampered_snapshot_is_refused(tmp_path: Path, marker: Path) -> None:
    """Store.restore of a JSON snapshot file with a hostile value raises
    CheckpointDecodeError naming the key; no command runs."""
    path = tmp_path / "snap.json"
    Store({"invoice": "ok"}, name="billing").snapshot(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    for row_id, row in evil_rows(marker).items():
        payload["data"]["invoice"] = row
        path.write_text(json.dumps(payload), encoding="utf-8")
        with pytest.raises(CheckpointDecodeError, match="not an allowed type"):
            Store.restore(path)
        assert not marker.exists(), row_id


def test_store_restore_still_loads_registered_types(tmp_path: Path,
                                                    fresh_allow_list: dict[str, type]) -> None:
    """A snapshot holding a user type restores once that type is registered."""
    path = tmp_path / "snap.json"
    Store({"ticket": Ticket("t", Level.HIGH)}).snapshot(path)
    fresh_allow_list.clear()
    with pytest.raises(CheckpointDecodeError, match=re.escape(f"'{HERE}:Ticket'")):
        Store.restore(path)
    register_types(Ticket, Level)
    assert Ticket("t", Level.HIGH) == Store.restore(path)["ticket"]


# ── the key in errors of the public API ──

def test_load_checkpoint_error_names_the_key(tmp_path: Path, marker: Path) -> None:
    """load_checkpoint of a hostile row names the store key that holds it."""
    path = tmp_path / "runs.db"
    db = WorkflowDB(str(path))
    db.create_run("victim", "f")
    db.save_checkpoint("victim", 0, "node", {"invoice": "ok"})
    tamper_sqlite(path, "victim", json.dumps({"invoice": evil_rows(marker)["enum-popen"]}))
    with pytest.raises(CheckpointDecodeError) as caught:
        db.load_checkpoint("victim", 0)
    assert "store key 'invoice'" in str(caught.value)


def test_resume_error_names_the_key(tmp_path: Path, marker: Path) -> None:
    """Resuming a run with a hostile checkpoint names the store key that holds it."""
    path = tmp_path / "runs.db"
    prepare = Prepare()
    prepare.then("default", Approve())
    flow = Flow(prepare, db_path=str(path), flow_name="approval")
    flow.run({})
    [run] = WorkflowDB(str(path)).list_runs()
    tamper_sqlite(path, run["run_id"], json.dumps({"invoice": evil_rows(marker)["enum-popen"]}))
    with pytest.raises(CheckpointDecodeError) as caught:
        flow.resume(run["run_id"], updates={"approved": True})
    assert "store key 'invoice'" in str(caught.value)


def test_store_restore_error_names_the_key(tmp_path: Path, marker: Path) -> None:
    """Store.restore of a snapshot with a hostile value names the store key that holds it."""
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"name": "s", "data": {
        "invoice": evil_rows(marker)["enum-popen"]}}), encoding="utf-8")
    with pytest.raises(CheckpointDecodeError) as caught:
        Store.restore(path)
    assert "store key 'invoice'" in str(caught.value)
