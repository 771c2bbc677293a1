"""Checkpoint codec: every supported type round-trips exactly; anything else is a clear error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import socket
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocoflow import CheckpointDecodeError, CheckpointEncodeError, PersistenceError, WorkflowDB
from pocoflow.persistence.codec import decode_value, encode_value

# ── types the codec must carry (module level: another process registers them) ──


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Mood(str, enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


class Perm(enum.IntFlag):
    R = 4
    W = 2


@dataclasses.dataclass
class Point:
    x: int
    y: float


@dataclasses.dataclass
class Shape:
    name: str
    corners: list[Point]
    origin: Point
    tags: set[str] = dataclasses.field(default_factory=set)
    span: tuple[int, int] = (0, 0)
    area: float = dataclasses.field(init=False, default=0.0)


@dataclasses.dataclass(frozen=True)
class Frozen:
    when: dt.date
    point: Point


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


class Person(pydantic.BaseModel):
    name: str
    born: dt.datetime
    address: Address
    scores: list[int] = []


class MyList(list):  # type: ignore[type-arg]
    """A list subclass: not a plain list, so the codec must refuse it."""


class Opaque:
    """A plain class the codec knows nothing about (picklable)."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return type(other) is Opaque and other.payload == self.payload

    __hash__ = None  # type: ignore[assignment]


def shape_of(value: Any) -> Any:
    """A hashable description of *value* including every type inside it, so that
    tuple vs list, set vs frozenset, int vs bool, Decimal('1.10') vs Decimal('1.1') differ."""
    kind = type(value)
    if kind in (list, tuple, MyList):
        return (kind.__name__, tuple(shape_of(v) for v in value))
    if kind in (set, frozenset):
        return (kind.__name__, frozenset(shape_of(v) for v in value))
    if kind is dict:
        return ("dict", tuple((shape_of(k), shape_of(v)) for k, v in value.items()))
    if dataclasses.is_dataclass(value):
        fields = tuple((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return (kind.__qualname__, tuple((name, shape_of(v)) for name, v in fields))
    if isinstance(value, pydantic.BaseModel):
        return (kind.__qualname__, tuple((name, shape_of(v)) for name, v in value))
    if kind in (Decimal, float):
        return (kind.__name__, repr(value))
    if kind in (dt.datetime, dt.time):
        return (kind.__name__, value.isoformat(), value.utcoffset())
    return (kind.__name__, value)


def roundtrip(value: Any, **kw: Any) -> Any:
    return decode(encode_value(value, "key", **kw), **kw)


def decode(text: str, **kw: Any) -> Any:
    return decode_value(text, **kw)


UTC_PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))

SUPPORTED: dict[str, Any] = {
    "datetime-naive": dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    "datetime-utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    "datetime-offset": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC_PLUS_0530),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(12, 30, 15, 123),
    "time-tz": dt.time(1, 2, 3, tzinfo=UTC_PLUS_0530),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "bytes": b"\x00\xff binary \x80",
    "bytes-empty": b"",
    "bytearray": bytearray(b"\x01\x02\xfe"),
    "set": {1, "a", (1, 2), None},
    "set-empty": set(),
    "frozenset": frozenset({"x", 2.5}),
    "set-of-frozensets": {frozenset({1}), frozenset({2, 3})},
    "tuple": (1, "a", None, True),
    "tuple-empty": (),
    "nested-tuple-in-list-in-dict": {"outer": [(1, (2, 3)), ("x",), [(4,)]]},
    "decimal": Decimal("1.10"),
    "decimal-exp": Decimal("-1E+3"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "pure-posix-path": PurePosixPath("/etc/pocoflow/conf.toml"),
    "path": Path("relative/dir/file.txt"),
    "pure-windows-path": PureWindowsPath("C:\\Users\\x"),
    "complex": complex(1.5, -2.0),
    "int-enum": Color.GREEN,
    "str-enum": Mood.GRUMPY,
    "int-flag": Perm.R | Perm.W,
    "dict-int-keys": {1: "one", 2: "two"},
    "dict-tuple-keys": {(1, 2): "a", (3,): "b"},
    "dict-mixed-keys": {1: "int", "1": "str", None: "none", False: "bool", 2.5: "float"},
    "dict-with-tag-key": {"__pf__": "tuple", "items": [1, 2]},
    "dict-with-nested-tag-key": {"a": {"__pf__": "set", "items": []}},
    "dataclass": Point(1, 2.5),
    "dataclass-nested": Shape("tri", [Point(0, 0), Point(1, 0)], Point(5, 5), {"a", "b"}, (1, 2)),
    "dataclass-frozen": Frozen(dt.date(2020, 5, 17), Point(3, 4.0)),
    "pydantic": Person(name="Ada", born=dt.datetime(1815, 12, 10, tzinfo=dt.timezone.utc),
                       address=Address(city="London", zip_code="W1"), scores=[3, 1]),
    "everything-in-a-list": [dt.date(2000, 1, 1), b"x", {1}, (2,), Decimal("0.1"), Color.RED,
                             Point(1, 1.0), {"k": frozenset({"v"})}],
}


@pytest.mark.parametrize("value", list(SUPPORTED.values()), ids=list(SUPPORTED))
def test_supported_value_round_trips_with_type_and_value(value: Any) -> None:
    """Each supported type decodes back to an equal value of exactly the same type,
    all the way down (tuples stay tuples, sets stay sets, Decimal keeps its digits)."""
    back = roundtrip(value)
    assert value == back
    assert shape_of(value) == shape_of(back)


def test_decimal_keeps_its_trailing_zero() -> None:
    """Decimal('1.10') comes back as '1.10', not '1.1' (its precision is data)."""
    assert "1.10" == str(roundtrip(Decimal("1.10")))


def test_dataclass_non_init_field_is_restored() -> None:
    """A dataclass field with init=False gets its checkpointed value back."""
    shape = Shape("sq", [], Point(0, 0))
    shape.area = 42.0
    assert 42.0 == roundtrip(shape).area


def test_datetime_with_a_named_zone_keeps_its_zone() -> None:
    """A datetime in a ZoneInfo zone comes back in that zone, so date arithmetic across a
    DST change gives the same result as before the checkpoint (no silent loss)."""
    before = dt.datetime(2024, 3, 30, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    after = roundtrip(before)
    assert before == after
    assert before + dt.timedelta(days=1) == after + dt.timedelta(days=1)
    assert (before + dt.timedelta(days=1)).utcoffset() == \
        (after + dt.timedelta(days=1)).utcoffset()


# ── text the codec wrote before the allow-list: written and read the same ────

#: encode_value's output for SUPPORTED values before decoding used an allow-list
#: ({mod} stands for this module's name)
WRITTEN_BEFORE = {
    "datetime-offset": '{"__pf__":"datetime","v":"2024-01-02T03:04:05.000006+05:30"}',
    "time-tz": '{"__pf__":"time","v":"01:02:03+05:30"}',
    "timedelta": '{"__pf__":"timedelta","v":[-1,5,7]}',
    "bytes": '{"__pf__":"bytes","v":"AP8gYmluYXJ5IIA="}',
    "set": '{"__pf__":"set","items":["a",1,null,{"__pf__":"tuple","items":[1,2]}]}',
    "tuple": '{"__pf__":"tuple","items":[1,"a",null,true]}',
    "decimal": '{"__pf__":"decimal","v":"1.10"}',
    "uuid": '{"__pf__":"uuid","v":"12345678-1234-5678-1234-567812345678"}',
    "pure-posix-path":
        '{"__pf__":"path","v":"/etc/pocoflow/conf.toml","cls":"pathlib:PurePosixPath"}',
    "pure-windows-path":
        '{"__pf__":"path","v":"C:\\\\Users\\\\x","cls":"pathlib:PureWindowsPath"}',
    "complex": '{"__pf__":"complex","v":[1.5,-2.0]}',
    "int-enum": '{"__pf__":"enum","cls":"{mod}:Color","v":2}',
    "str-enum": '{"__pf__":"enum","cls":"{mod}:Mood","v":"grumpy"}',
    "int-flag": '{"__pf__":"enum","cls":"{mod}:Perm","v":6}',
    "dict-mixed-keys": '{"__pf__":"dict","items":'
                       '[[1,"int"],["1","str"],[null,"none"],[false,"bool"],[2.5,"float"]]}',
    "dict-with-tag-key": '{"__pf__":"dict","items":[["__pf__","tuple"],["items",[1,2]]]}',
    "dataclass-nested": '{"__pf__":"dataclass","cls":"{mod}:Shape","fields":{"name":"tri",'
                        '"corners":[{"__pf__":"dataclass","cls":"{mod}:Point","fields":{"x":0,"y":0}},'
                        '{"__pf__":"dataclass","cls":"{mod}:Point","fields":{"x":1,"y":0}}],'
                        '"origin":{"__pf__":"dataclass","cls":"{mod}:Point","fields":{"x":5,"y":5}},'
                        '"tags":{"__pf__":"set","items":["a","b"]},'
                        '"span":{"__pf__":"tuple","items":[1,2]},"area":0.0}}',
    "dataclass-frozen": '{"__pf__":"dataclass","cls":"{mod}:Frozen","fields":'
                        '{"when":{"__pf__":"date","v":"2020-05-17"},'
                        '"point":{"__pf__":"dataclass","cls":"{mod}:Point","fields":{"x":3,"y":4.0}}}}',
    "pydantic": '{"__pf__":"pydantic","cls":"{mod}:Person","data":{"name":"Ada",'
                '"born":"1815-12-10T00:00:00Z","address":{"city":"London","zip_code":"W1"},'
                '"scores":[3,1]}}',
}


@pytest.mark.parametrize("name", list(WRITTEN_BEFORE))
def test_checkpoint_text_is_unchanged_and_old_text_still_loads(name: str) -> None:
    """The encoder writes byte for byte the text the codec wrote before decoding used an
    allow-list (old and new checkpoints compare equal in delta rows), and that old text
    decodes to the value (its classes are allowed: this process encodes them)."""
    text = WRITTEN_BEFORE[name].replace("{mod}", __name__)
    value = SUPPORTED[name]
    assert text == encode_value(value, "key")
    assert shape_of(value) == shape_of(decode(text))


# ── plain JSON stays plain (0.2 readability) ────────────────────────────────

PLAIN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text().filter(lambda k: k != "__pf__"), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(PLAIN_JSON)
def test_plain_json_encodes_exactly_like_compact_json_dumps(value: Any) -> None:
    """Plain JSON data is written as compact json.dumps writes it (no tags), and reads
    back equal with the same types."""
    text = encode_value(value, "key")
    assert json.dumps(value, separators=(",", ":"), ensure_ascii=False) == text
    assert shape_of(value) == shape_of(decode(text))


def test_plain_json_is_human_readable() -> None:
    """A typical store value reads as ordinary JSON, non-ASCII text kept as is."""
    value = {"name": "Zoë", "n": [1, 2.5, None, True], "nested": {"ok": False}}
    assert '{"name":"Zoë","n":[1,2.5,null,true],"nested":{"ok":false}}' == \
        encode_value(value, "key")


# ── sets are encoded deterministically ──────────────────────────────────────


def test_set_encoding_does_not_depend_on_insertion_order() -> None:
    """Two equal sets built in different orders (and with different histories of
    deletions) encode to the same text, so an unchanged set never looks changed."""
    words = [f"word-{i}" for i in range(200)]
    forward = set(words)
    backward = set(reversed(words))
    churned = set(words + [f"gone-{i}" for i in range(500)])
    for i in range(500):
        churned.discard(f"gone-{i}")
    texts = {encode_value(s, "key") for s in (forward, backward, churned)}
    assert 1 == len(texts)
    mixed_a = {1, "1", (1, "a"), None, 2.5, frozenset({3})}
    mixed_b = {frozenset({3}), 2.5, None, (1, "a"), "1", 1}
    assert encode_value(mixed_a, "key") == encode_value(mixed_b, "key")
    assert encode_value(frozenset(mixed_a), "key") == encode_value(frozenset(mixed_b), "key")


def test_set_encoding_is_the_same_in_every_process() -> None:
    """Processes with different string hash seeds (different set orders) encode the same
    set to the same text, so a resumed run in another process sees no spurious change."""
    code = ("from pocoflow.persistence.codec import decode_value, encode_value\n"
            "print(encode_value({'k': {f'w{i}' for i in range(50)} | {('t', 1)}}, 'key'))")
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True)
        outputs.add(result.stdout)
    assert 1 == len(outputs)


# ── what the codec refuses ──────────────────────────────────────────────────


def _lambda() -> Any:
    return lambda x: x


UNSUPPORTED = {
    "object": (object, "object"),
    "lambda": (_lambda, "function"),
    "list-subclass": (lambda: MyList([1, 2]), "MyList"),
    "nested-in-dict": (lambda: {"ok": 1, "bad": [object()]}, "object"),
}


@pytest.mark.parametrize(("make", "type_name"), list(UNSUPPORTED.values()), ids=list(UNSUPPORTED))
def test_unsupported_value_raises_error_naming_key_type_and_transient(make: Any,
                                                                      type_name: str) -> None:
    """A value the codec cannot encode raises CheckpointEncodeError (also a TypeError and a
    PersistenceError) that names the store key and the type and suggests transient."""
    with pytest.raises(CheckpointEncodeError) as caught:
        encode_value(make(), "client_key")
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, PersistenceError)
    message = str(caught.value)
    assert "'client_key'" in message
    assert type_name in message
    assert "transient" in message


def test_socket_raises_error_naming_key_type_and_transient() -> None:
    """A live socket cannot be checkpointed: the error names the key, 'socket' and transient."""
    with socket.socket() as sock, pytest.raises(CheckpointEncodeError) as caught:
        encode_value({"conn": sock}, "network")
    assert isinstance(caught.value, TypeError)
    assert "'network'" in str(caught.value)
    assert "socket" in str(caught.value)
    assert "transient" in str(caught.value)


def test_circular_reference_raises_checkpoint_encode_error_naming_key() -> None:
    """A list that contains itself is a CheckpointEncodeError naming the key, not a
    RecursionError escaping from the codec."""
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(CheckpointEncodeError, match="'history'"):
        encode_value({"x": loop}, "history")


# ── pickle is opt-in ────────────────────────────────────────────────────────


def test_allow_pickle_round_trips_an_arbitrary_object() -> None:
    """With allow_pickle=True an object of a class the codec does not know round-trips,
    also nested inside supported containers."""
    value = {"obj": Opaque([1, {2, 3}]), "t": (Opaque("x"),)}
    back = roundtrip(value, allow_pickle=True)
    assert value == back
    assert Opaque is type(back["obj"])


def test_pickled_value_without_allow_pickle_raises_decode_error() -> None:
    """Decoding a pickled value without allow_pickle raises CheckpointDecodeError (also a
    ValueError) that says how to allow it, and does not unpickle anything."""
    text = encode_value(Opaque(1), "key", allow_pickle=True)
    with pytest.raises(CheckpointDecodeError, match="allow_pickle") as caught:
        decode(text)
    assert isinstance(caught.value, ValueError)


def test_pickle_is_not_used_for_supported_types() -> None:
    """allow_pickle=True changes nothing for values the codec supports: no pickle tag."""
    text = encode_value({"when": dt.date(2020, 1, 1), "p": Point(1, 2.0)}, "key",
                        allow_pickle=True)
    assert "pickle" not in text


# ── classes that are not allowed when decoding (more in test_codec_security) ─


@pytest.mark.parametrize("tag", ["dataclass", "pydantic", "enum", "path"])
@pytest.mark.parametrize("cls", ["no_such_module_pf_xyz:Gone", f"{__name__}:Vanished",
                                 f"{__name__}:Opaque"])
def test_class_not_allowed_raises_decode_error_naming_the_class(tag: str, cls: str) -> None:
    """A checkpointed dataclass/pydantic model/enum/path whose class is neither built in,
    registered nor encoded by this process raises CheckpointDecodeError naming the class
    path, whether or not that class could be imported."""
    text = json.dumps({"__pf__": tag, "cls": cls, "fields": {}, "data": {}, "v": "1"})
    with pytest.raises(CheckpointDecodeError) as caught:
        decode(text)
    assert cls in str(caught.value)


def test_class_path_of_an_allowed_non_dataclass_raises_decode_error() -> None:
    """A dataclass tag naming an allowed class that is not a dataclass (an enum this
    process encoded) is a CheckpointDecodeError naming it."""
    encode_value(Color.RED, "key")
    text = json.dumps({"__pf__": "dataclass", "cls": f"{__name__}:Color", "fields": {}})
    with pytest.raises(CheckpointDecodeError, match="Color"):
        decode(text)


def test_unknown_tag_raises_decode_error() -> None:
    """A tag this version does not know is a CheckpointDecodeError naming the tag."""
    with pytest.raises(CheckpointDecodeError, match="from_the_future"):
        decode('{"__pf__":"from_the_future","v":1}')


# ── through a real database ─────────────────────────────────────────────────


def test_every_supported_type_round_trips_through_the_database(db_url: str) -> None:
    """save_checkpoint then load_checkpoint gives back every supported value exactly,
    on SQLite and PostgreSQL."""
    db = WorkflowDB(db_url)
    db.create_run("codec-run", "codec")
    db.save_checkpoint("codec-run", 0, "node", SUPPORTED)
    loaded = db.load_checkpoint("codec-run", 0).as_dict()
    assert shape_of(SUPPORTED) == shape_of(loaded)


def test_text_with_a_lone_surrogate_round_trips_through_the_database(db_url: str) -> None:
    """A str holding a lone surrogate (e.g. a file name decoded with surrogateescape) is a
    valid Python str: it is stored and loaded back unchanged, not a UnicodeEncodeError."""
    db = WorkflowDB(db_url)
    db.create_run("surrogate-run", "codec")
    db.save_checkpoint("surrogate-run", 0, "node", {"name": "file-\udcff-name"})
    assert "file-\udcff-name" == db.load_checkpoint("surrogate-run", 0)["name"]


def test_pickled_values_round_trip_through_a_database_that_allows_them(db_url: str) -> None:
    """A WorkflowDB opened with allow_pickle=True stores and loads an unknown object."""
    db = WorkflowDB(db_url, allow_pickle=True)
    db.create_run("pickle-run", "codec")
    db.save_checkpoint("pickle-run", 0, "node", {"obj": Opaque({"a": 1})})
    assert Opaque({"a": 1}) == db.load_checkpoint("pickle-run", 0)["obj"]
