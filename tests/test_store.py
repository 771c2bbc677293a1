"""Store: mapping protocol, schema checks, observers, snapshots and change tracking."""

from __future__ import annotations

import collections.abc as cabc
import itertools
import json
import logging
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal, NewType, Optional, Protocol, TypedDict, TypeVar

import pytest

import pocoflow
from pocoflow import SchemaError, Store

UserId = NewType("UserId", int)
T = TypeVar("T")


class Greeter(Protocol):
    """A Protocol that is not runtime_checkable: isinstance cannot check it."""

    def greet(self) -> str: ...


class Movie(TypedDict):
    """A TypedDict: isinstance cannot check it either."""

    title: str


@pytest.fixture
def store_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> pytest.LogCaptureFixture:
    """caplog at WARNING on ``pocoflow.store``, whatever other tests did to propagation."""
    monkeypatch.setattr(logging.getLogger("pocoflow"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="pocoflow.store")
    return caplog


def broken_observer(key: str, old: Any, new: Any) -> None:
    """An observer with a bug."""
    raise RuntimeError("observer bug")


# ── the mapping protocol ────────────────────────────────────────────────────


def test_store_is_a_mutable_mapping() -> None:
    """Store is a MutableMapping, so code typed against Mapping accepts it."""
    store = Store()
    assert isinstance(store, MutableMapping)
    assert isinstance(store, Mapping)


def test_setitem_then_getitem_returns_the_value() -> None:
    """A value written with [] is read back with []."""
    store = Store()
    store["answer"] = 42
    assert 42 == store["answer"]


def test_constructor_data_is_readable() -> None:
    """The data passed to the constructor is in the store."""
    store = Store({"a": 1, "b": "two"})
    assert 1 == store["a"]
    assert "two" == store["b"]


def test_constructor_copies_the_data() -> None:
    """Writes to a Store never change the dict it was built from (as in 0.2)."""
    data = {"a": 1}
    store = Store(data)
    store["a"] = 2
    store["b"] = 3
    assert {"a": 1} == data


def test_get_returns_value_or_default() -> None:
    """get returns the value, None for a missing key, or the default given."""
    store = Store({"a": 1})
    assert 1 == store.get("a")
    assert store.get("missing") is None
    assert "fallback" == store.get("missing", "fallback")


def test_update_accepts_a_mapping_pairs_and_keywords() -> None:
    """update takes a dict (as 0.2 did), key/value pairs and keyword arguments."""
    store = Store()
    store.update({"a": 1})
    store.update([("b", 2)])
    store.update(c=3)
    assert {"a": 1, "b": 2, "c": 3} == dict(store)


def test_update_with_mapping_as_a_keyword_writes_its_keys_as_in_02() -> None:
    """store.update(mapping={...}) writes the mapping's keys, as pocoflow 0.2's
    update(mapping) did (not a key named "mapping"); the schema still checks them."""
    store = Store(schema={"n": int})
    store.update(mapping={"n": 1, "text": "t"})
    assert {"n": 1, "text": "t"} == dict(store)
    with pytest.raises(SchemaError, match="'n'"):
        store.update(mapping={"n": "one"})


def test_keys_items_values_reflect_the_contents() -> None:
    """keys, items and values show the current contents in insertion order."""
    store = Store({"a": 1, "b": 2})
    store["c"] = 3
    assert ["a", "b", "c"] == list(store.keys())
    assert [("a", 1), ("b", 2), ("c", 3)] == list(store.items())
    assert [1, 2, 3] == list(store.values())


def test_in_and_len() -> None:
    """`in` tells whether a key is set and len counts the keys."""
    store = Store({"a": 1})
    assert "a" in store
    assert "b" not in store
    assert 1 == len(store)
    store["b"] = None
    assert "b" in store
    assert 2 == len(store)


def test_iteration_yields_the_keys_in_insertion_order() -> None:
    """Iterating a Store yields its keys, like a dict."""
    store = Store({"z": 1, "a": 2})
    store["m"] = 3
    assert ["z", "a", "m"] == list(store)


def test_del_removes_the_key() -> None:
    """del store[key] removes the key."""
    store = Store({"a": 1, "b": 2})
    del store["a"]
    assert "a" not in store
    assert {"b": 2} == dict(store)


def test_del_of_a_missing_key_raises_key_error_naming_store_and_key() -> None:
    """Deleting a missing key raises KeyError naming the store and the key."""
    store = Store(name="inventory")
    with pytest.raises(KeyError) as info:
        del store["ghost"]
    assert "inventory" in str(info.value)
    assert "ghost" in str(info.value)


def test_missing_key_raises_key_error_naming_store_and_key() -> None:
    """Reading a missing key raises KeyError naming the store and the key."""
    store = Store({"present": 1}, name="my_pipeline")
    with pytest.raises(KeyError) as info:
        store["absent"]
    assert "my_pipeline" in str(info.value)
    assert "absent" in str(info.value)


def test_pop_returns_and_removes_the_value() -> None:
    """pop returns the value and removes the key; a default covers a missing key."""
    store = Store({"a": 1})
    assert 1 == store.pop("a")
    assert "a" not in store
    assert "fallback" == store.pop("a", "fallback")
    with pytest.raises(KeyError, match="'a'"):
        store.pop("a")


def test_setdefault_keeps_an_existing_value_and_sets_a_missing_one() -> None:
    """setdefault returns the existing value untouched, or writes and returns the default."""
    store = Store({"a": 1})
    assert 1 == store.setdefault("a", 99)
    assert 1 == store["a"]
    assert [] == store.setdefault("trail", [])
    store["trail"].append("x")
    assert ["x"] == store["trail"]


def test_store_equals_a_mapping_with_the_same_items() -> None:
    """A Store compares equal to a dict (either side) or another plain mapping with the
    same items."""
    from types import MappingProxyType

    store = Store({"a": 1, "b": [2]})
    assert {"a": 1, "b": [2]} == store
    assert store == {"a": 1, "b": [2]}
    assert MappingProxyType({"a": 1, "b": [2]}) == store
    assert store == MappingProxyType({"a": 1, "b": [2]})
    assert store != {"a": 1}
    assert store != {"a": 1, "b": [3]}
    assert store != [("a", 1), ("b", [2])]


def test_two_stores_are_equal_only_if_they_are_the_same_store() -> None:
    """Stores compare by identity, as in pocoflow 0.2: two sessions holding the same data
    are different stores (compare contents with store.as_dict())."""
    store = Store({"a": 1})
    twin = Store({"a": 1})
    assert store == store
    assert store != twin
    assert store.as_dict() == twin.as_dict()


def test_a_store_is_hashable_by_identity() -> None:
    """A Store can be a dict key or a set member (0.2 session registries), by identity,
    and its hash does not change when its contents do."""
    store, other = Store({"message": "hi"}), Store({"message": "hi"})
    sessions = {store: "ann", other: "bob"}
    before = hash(store)
    store["reply"] = "ih"
    assert "ann" == sessions[store]
    assert before == hash(store)
    assert 2 == len({store, other, store})


def test_name_defaults_to_store() -> None:
    """The name is 'store' unless one is given."""
    assert "store" == Store().name
    assert "my_pipeline" == Store(name="my_pipeline").name


@pytest.mark.parametrize("data", [[("a", 1)], "abc", 42])
def test_non_mapping_data_raises_type_error_naming_the_store(data: Any) -> None:
    """Data that is not a mapping is refused with a TypeError naming the store."""
    with pytest.raises(TypeError, match="'loader'"):
        Store(data, name="loader")


# ── as_dict, wrap ───────────────────────────────────────────────────────────


def test_as_dict_returns_the_underlying_dict() -> None:
    """as_dict returns the store's own dict, so changes show on both sides (as in 0.2)."""
    store = Store({"a": 1})
    raw = store.as_dict()
    assert isinstance(raw, dict)
    assert {"a": 1} == raw
    raw["b"] = 2
    store["c"] = 3
    assert 2 == store["b"]
    assert {"a": 1, "b": 2, "c": 3} == raw


def test_wrap_writes_through_to_the_given_dict() -> None:
    """Store.wrap(d) reads and writes d itself, so the caller sees the final state."""
    shared = {"a": 1}
    store = Store.wrap(shared)
    store["b"] = 2
    del store["a"]
    assert {"b": 2} == shared
    assert store.as_dict() is shared


# ── schema ──────────────────────────────────────────────────────────────────

SCHEMA_CASES: list[tuple[str, Any, list[Any], list[Any]]] = [
    ("class", str, ["", "text"], [42, None, b"bytes"]),
    ("tuple-of-classes", (int, float), [1, 1.5], ["1", None]),
    ("int-or-none", int | None, [1, None], ["1", 1.5]),
    ("optional-str", Optional[str], ["a", None], [1, b"a"]),  # noqa: UP045
    ("list-of-str", list[str], [[], ["a", "b"]], [["a", 1], ("a",), "ab", None]),
    ("dict-str-int", dict[str, int], [{}, {"a": 1}], [{"a": "1"}, {1: 1}, [("a", 1)]]),
    ("tuple-variadic", tuple[int, ...], [(), (1, 2, 3)], [(1, "2"), [1, 2]]),
    ("tuple-fixed", tuple[int, str], [(1, "a")], [(1,), ("a", 1), (1, "a", 2), [1, "a"]]),
    ("tuple-empty", tuple[()], [()], [(1,), (1, 2), []]),
    ("literal-str", Literal["a", "b"], ["a", "b"], ["c", 1, None]),
    ("literal-int", Literal[1], [1], [True, 1.0, "1", 2]),
    ("annotated", Annotated[int, "a count"], [0, 3], ["3", None]),
    ("newtype", UserId, [UserId(5), 5], ["5", None]),
    ("class-of", type[int], [int, bool], [str, 3, None]),
    ("class-of-either", type[int | str], [int, str], [float, "int"]),
    ("any-class", type[Any], [int, type], [3, None]),
]


@pytest.mark.parametrize(
    ("spec", "value"),
    [pytest.param(spec, v, id=f"{name}-{v!r}") for name, spec, good, _ in SCHEMA_CASES
     for v in good],
)
def test_schema_accepts_values_of_the_declared_type(spec: Any, value: Any) -> None:
    """A write that fits the schema entry is stored."""
    store = Store(schema={"k": spec})
    store["k"] = value
    assert value == store["k"]


@pytest.mark.parametrize(
    ("spec", "value"),
    [pytest.param(spec, v, id=f"{name}-{v!r}") for name, spec, _, bad in SCHEMA_CASES
     for v in bad],
)
def test_schema_rejects_values_of_another_type(spec: Any, value: Any) -> None:
    """A write that breaks the schema entry raises SchemaError and stores nothing."""
    store = Store(schema={"k": spec})
    with pytest.raises(SchemaError):
        store["k"] = value
    assert "k" not in store


def test_an_iterable_entry_checks_collections_and_refuses_one_shot_iterators() -> None:
    """Iterable[int] takes a list or a set whose items fit; a generator or an endless
    iterator is refused (its items cannot be looked at without using it up, or at all),
    and is left as it was."""
    store = Store(schema={"ids": cabc.Iterable[int]})
    store["ids"] = [1, 2]
    store["ids"] = {3}
    with pytest.raises(SchemaError):
        store["ids"] = [1, "2"]
    numbers = (n for n in [1, 2, 3])
    endless = itertools.count()
    for one_shot in (numbers, endless):
        with pytest.raises(SchemaError):
            store["ids"] = one_shot
    assert ([1, 2, 3], 0) == (list(numbers), next(endless))
    assert {3} == store["ids"]


@pytest.mark.parametrize("value", [None, 0, "x", [1], object()])
def test_any_accepts_every_value(value: Any) -> None:
    """A key declared Any takes any value."""
    store = Store(schema={"k": Any})
    store["k"] = value
    assert store["k"] is value


def test_keys_outside_the_schema_are_not_checked() -> None:
    """Only the keys named in the schema are type-checked."""
    store = Store(schema={"query": str})
    store["other"] = 42
    assert 42 == store["other"]


def test_schema_error_is_a_type_error() -> None:
    """SchemaError is exported by pocoflow and subclasses TypeError, so except TypeError works."""
    assert issubclass(pocoflow.SchemaError, TypeError)
    store = Store(schema={"n": int})
    with pytest.raises(TypeError):
        store["n"] = "x"


def test_wrong_write_message_names_store_key_expected_and_actual_type() -> None:
    """The TypeError of a wrong write names the store, the key, the expected and the actual type."""
    store = Store({"query": ""}, schema={"query": str}, name="my_pipeline")
    with pytest.raises(SchemaError) as info:
        store["query"] = 42
    message = str(info.value)
    assert "my_pipeline" in message
    assert "'query'" in message
    assert "str" in message
    assert "int" in message


def test_wrong_write_message_describes_a_typing_form() -> None:
    """The message of a rejected typing form shows the form, e.g. 'int | None'."""
    store = Store(schema={"limit": int | None}, name="cfg")
    with pytest.raises(SchemaError, match=r"int \| None") as info:
        store["limit"] = "ten"
    assert "str" in str(info.value)


def test_wrong_write_keeps_the_old_value_and_records_no_change() -> None:
    """A rejected write leaves the old value, calls no observer and is not a change."""
    store = Store({"query": "old"}, schema={"query": str})
    calls: list[tuple[str, Any, Any]] = []
    store.add_observer(lambda key, old, new: calls.append((key, old, new)))
    store.take_changes()
    with pytest.raises(TypeError):
        store["query"] = 42
    assert "old" == store["query"]
    assert [] == calls
    assert frozenset() == store.take_changes().written


def test_wrong_write_through_update_is_rejected() -> None:
    """update goes through the schema check like []."""
    store = Store({"n": 1}, schema={"n": int})
    with pytest.raises(SchemaError, match="'n'"):
        store.update({"n": "one"})
    assert 1 == store["n"]


def test_wrong_write_through_setdefault_is_rejected() -> None:
    """setdefault on a missing key goes through the schema check."""
    store = Store(schema={"n": int})
    with pytest.raises(SchemaError, match="'n'"):
        store.setdefault("n", "one")
    assert "n" not in store


def test_runtime_checkable_protocol_is_checked() -> None:
    """A runtime_checkable Protocol is a valid schema entry and is checked."""
    from typing import runtime_checkable

    @runtime_checkable
    class Sized(Protocol):
        def __len__(self) -> int: ...

    store = Store(schema={"k": Sized})
    store["k"] = [1, 2]
    with pytest.raises(SchemaError):
        store["k"] = 3
    assert [1, 2] == store["k"]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(T, id="typevar"),
        pytest.param("int", id="string-forward-ref"),
        pytest.param(list["Missing"], id="nested-forward-ref"),  # noqa: F821
        pytest.param(Greeter, id="non-runtime-protocol"),
        pytest.param(Movie, id="typeddict"),
        pytest.param(type[list[int]], id="class-of-a-generic"),
    ],
)
def test_unsupported_schema_form_is_refused_at_construction(spec: Any) -> None:
    """A form that cannot be checked at runtime fails at construction, naming key and store."""
    with pytest.raises(SchemaError) as info:
        Store(schema={"payload": spec}, name="my_pipeline")
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "my_pipeline" in message
    assert "'payload'" in message


# ── validate ────────────────────────────────────────────────────────────────


def test_validate_lists_the_missing_keys() -> None:
    """validate raises ValueError listing every required key that is missing."""
    store = Store({"query": "q"}, schema={"query": str, "result": str, "score": float},
                  name="my_pipeline")
    with pytest.raises(ValueError, match="missing") as info:
        store.validate()
    message = str(info.value)
    assert "my_pipeline" in message
    assert "result" in message
    assert "score" in message
    assert "query" not in message


def test_validate_checks_presence_only_so_none_placeholders_pass() -> None:
    """By default validate checks that schema keys are present, as pocoflow 0.2 did: None
    placeholders and other values of the wrong type pass."""
    store = Store({"query": 42, "result": None}, schema={"query": str, "result": str})
    assert store.validate() is None


def test_validate_with_types_lists_keys_of_the_wrong_type() -> None:
    """validate(types=True) also reports a key whose value (e.g. from the constructor)
    breaks the schema, next to the missing keys."""
    store = Store({"query": 42, "result": ""}, schema={"query": str, "result": str,
                                                       "score": float})
    with pytest.raises(ValueError, match="wrong type") as info:
        store.validate(types=True)
    message = str(info.value)
    assert "missing: ['score']" in message
    assert "wrong type: ['query']" in message
    assert "result" not in message


def test_validate_passes_when_every_key_fits() -> None:
    """validate(types=True) returns None when all schema keys are present with the right
    types."""
    store = Store({"query": "q", "n": None}, schema={"query": str, "n": int | None})
    assert store.validate(types=True) is None


# ── observers ───────────────────────────────────────────────────────────────


def test_observer_receives_key_old_and_new_value() -> None:
    """An observer is called after every write with (key, old, new); old is None for a new key."""
    store = Store({"a": 1})
    calls: list[tuple[str, Any, Any]] = []
    store.add_observer(lambda key, old, new: calls.append((key, old, new)))
    store["a"] = 2
    store["b"] = "x"
    store.update(a=3)
    assert [("a", 1, 2), ("b", None, "x"), ("a", 2, 3)] == calls


def test_remove_observer_stops_its_notifications() -> None:
    """A removed observer is no longer called; the others still are."""
    store = Store()
    first: list[str] = []
    second: list[str] = []

    def observe_first(key: str, old: Any, new: Any) -> None:
        first.append(key)

    store.add_observer(observe_first)
    store.add_observer(lambda key, old, new: second.append(key))
    store["a"] = 1
    store.remove_observer(observe_first)
    store["b"] = 2
    assert ["a"] == first
    assert ["a", "b"] == second


def test_raising_observer_is_logged_and_never_breaks_the_write(
    store_log: pytest.LogCaptureFixture,
) -> None:
    """An observer that raises is logged on pocoflow.store; the write and later observers go on."""
    store = Store(name="observed")
    later: list[str] = []
    store.add_observer(broken_observer)
    store.add_observer(lambda key, old, new: later.append(key))
    store["x"] = 1
    assert 1 == store["x"]
    assert ["x"] == later
    records = [r for r in store_log.records if r.name == "pocoflow.store"]
    assert 1 == len(records)
    assert logging.WARNING == records[0].levelno
    assert "observed" in records[0].getMessage()
    assert "'x'" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert "observer bug" in str(records[0].exc_info[1])


def test_add_observer_refuses_a_non_callable() -> None:
    """add_observer with something that is not callable raises TypeError naming the store."""
    store = Store(name="observed")
    with pytest.raises(TypeError, match="'observed'"):
        store.add_observer("print")  # type: ignore[arg-type]


# ── change tracking ─────────────────────────────────────────────────────────


def test_take_changes_returns_written_and_deleted_keys_and_resets() -> None:
    """take_changes reports the keys written and deleted since the last call, then starts afresh."""
    store = Store({"a": 1, "b": 2, "c": 3})
    store.take_changes()
    store["a"] = 10
    store["d"] = 4
    del store["b"]
    store.pop("c")
    changes = store.take_changes()
    assert frozenset({"a", "d"}) == changes.written
    assert frozenset({"b", "c"}) == changes.deleted
    empty = store.take_changes()
    assert frozenset() == empty.written
    assert frozenset() == empty.deleted


def test_take_changes_reports_a_written_then_deleted_key_as_deleted_only() -> None:
    """A key written and then deleted in one step is reported as deleted, not written."""
    store = Store()
    store["tmp"] = 1
    del store["tmp"]
    changes = store.take_changes()
    assert frozenset() == changes.written
    assert frozenset({"tmp"}) == changes.deleted


def test_take_changes_reports_a_deleted_then_rewritten_key_as_written_only() -> None:
    """A key deleted and then written again in one step is reported as written, not deleted."""
    store = Store({"a": 1})
    store.take_changes()
    del store["a"]
    store["a"] = 2
    changes = store.take_changes()
    assert frozenset({"a"}) == changes.written
    assert frozenset() == changes.deleted


# ── snapshot / restore ──────────────────────────────────────────────────────


def test_snapshot_restore_round_trip_keeps_data_and_name(tmp_path: Path) -> None:
    """Store.restore reads back what snapshot wrote, with the store's name."""
    data = {"query": "q", "n": 3, "score": 0.5, "ok": True, "none": None,
            "items": ["a", "b"], "nested": {"k": [1, {"x": "ü"}]}}
    store = Store(data, name="my_pipeline")
    path = tmp_path / "snap.json"
    store.snapshot(path)
    restored = Store.restore(path)
    assert data == restored
    assert "my_pipeline" == restored.name


def test_snapshot_accepts_a_str_path_and_creates_parent_folders(tmp_path: Path) -> None:
    """snapshot takes a str path and creates missing parent folders, as the README uses it."""
    path = tmp_path / "run_42" / "step_002.json"
    Store({"a": 1}).snapshot(str(path))
    assert {"a": 1} == Store.restore(str(path))


def test_snapshot_writes_the_documented_json_format(tmp_path: Path) -> None:
    """The snapshot file is JSON with the store's name and its data (0.2's format)."""
    path = tmp_path / "snap.json"
    Store({"a": 1}, name="fmt").snapshot(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert "fmt" == payload["name"]
    assert {"a": 1} == payload["data"]


def test_restore_reads_a_pocoflow_02_snapshot(tmp_path: Path) -> None:
    """A snapshot file written by pocoflow 0.2 restores."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "legacy", "data": {"query": "q", "result": ""}},
                               indent=2), encoding="utf-8")
    store = Store.restore(path)
    assert "legacy" == store.name
    assert {"query": "q", "result": ""} == store


def test_restore_applies_the_given_schema(tmp_path: Path) -> None:
    """Store.restore(path, schema=...) returns a store that checks writes against it."""
    path = tmp_path / "snap.json"
    Store({"query": "q"}).snapshot(path)
    restored = Store.restore(path, schema={"query": str})
    with pytest.raises(SchemaError, match="'query'"):
        restored["query"] = 42
    assert "q" == restored["query"]


def test_snapshot_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    """snapshot writes through a temporary file and leaves only the snapshot itself."""
    path = tmp_path / "snap.json"
    store = Store({"a": 1})
    store.snapshot(path)
    store["a"] = 2
    store.snapshot(path)
    assert [path] == list(tmp_path.iterdir())
    assert {"a": 2} == Store.restore(path)


def test_snapshot_leaves_out_a_non_json_value_lists_it_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A value the codec cannot encode is left out of the snapshot and listed under
    "excluded" (never a placeholder string); one WARNING on pocoflow.store names the store,
    the key and the type, however many snapshots are taken."""
    store = Store({"query": "q", "client": object(), "tmp": "x"}, name="my_pipeline",
                  transient={"tmp"})
    path = tmp_path / "snap.json"
    with caplog.at_level(logging.DEBUG, logger="pocoflow"):
        store.snapshot(path)
        store.snapshot(path)

    payload = json.loads(path.read_text(encoding="utf-8"))
    assert {"query": "q"} == payload["data"]
    assert ["client", "tmp"] == payload["excluded"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["pocoflow.store"] == [r.name for r in warnings]
    message = warnings[0].getMessage()
    assert "my_pipeline" in message
    assert "'client'" in message
    assert "object" in message
    assert "transient" in message
    assert "strict_checkpoints" in message
    restored = Store.restore(path)
    assert {"query": "q"} == restored.as_dict()


def test_strict_checkpoints_is_kept_by_the_store_and_by_restore(tmp_path: Path) -> None:
    """strict_checkpoints defaults to False, is reported by the store, and restore can
    ask for it again."""
    path = tmp_path / "snap.json"
    Store({"a": 1}).snapshot(path)

    assert False is Store().strict_checkpoints
    assert True is Store(strict_checkpoints=True).strict_checkpoints
    assert True is Store.restore(path, strict_checkpoints=True).strict_checkpoints


def test_snapshot_of_a_non_json_value_names_the_key_and_suggests_transient_when_strict(
    tmp_path: Path,
) -> None:
    """With strict_checkpoints, a value JSON cannot hold raises TypeError naming the key
    and suggesting transient, and writes no file."""
    store = Store({"query": "q", "client": object()}, name="my_pipeline",
                  strict_checkpoints=True)
    path = tmp_path / "snap.json"
    with pytest.raises(TypeError) as info:
        store.snapshot(path)
    message = str(info.value)
    assert "'client'" in message
    assert "my_pipeline" in message
    assert "transient" in message
    assert [] == list(tmp_path.iterdir())


def test_snapshot_keeps_types_json_lacks_and_plain_values_stay_plain(tmp_path: Path) -> None:
    """Tuples, sets, datetimes and Decimals come back from a snapshot as they were (the
    checkpoint codec tags them); plain values are written as plain JSON, as 0.2 did."""
    import datetime as dt
    from decimal import Decimal

    values = {"pair": (1, "a"), "tags": {"x", "y"}, "when": dt.datetime(2026, 11, 26, 1, 2),
              "price": Decimal("1.10"), "nested": {"k": [(1, 2)]}, "plain": [1, "two"]}
    path = tmp_path / "snap.json"
    Store(values, name="typed").snapshot(path)

    restored = Store.restore(path)
    assert values == restored.as_dict()
    assert [tuple, set] == [type(restored["pair"]), type(restored["tags"])]
    assert [1, "two"] == json.loads(path.read_text(encoding="utf-8"))["data"]["plain"]


def test_failed_snapshot_keeps_the_previous_file(tmp_path: Path) -> None:
    """A snapshot that fails leaves the earlier snapshot at that path intact."""
    path = tmp_path / "snap.json"
    store = Store({"a": 1}, strict_checkpoints=True)
    store.snapshot(path)
    store["lock"] = object()
    with pytest.raises(TypeError, match="'lock'"):
        store.snapshot(path)
    assert {"a": 1} == Store.restore(path)
    assert [path] == list(tmp_path.iterdir())


def test_transient_keys_are_excluded_and_listed(tmp_path: Path) -> None:
    """Transient keys are left out of the snapshot and listed under 'excluded'."""
    store = Store({"query": "q", "client": object(), "lock": object()},
                  name="my_pipeline", transient={"client", "lock"})
    path = tmp_path / "snap.json"
    store.snapshot(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert {"query": "q"} == payload["data"]
    assert ["client", "lock"] == payload["excluded"]
    restored = Store.restore(path)
    assert {"query": "q"} == restored
    assert "my_pipeline" == restored.name


def test_snapshot_refuses_a_non_str_key(tmp_path: Path) -> None:
    """A non-str top-level key is refused with a TypeError naming it, instead of being renamed."""
    store = Store({"a": 1}, name="my_pipeline")
    store[7] = "seven"  # type: ignore[index]
    path = tmp_path / "snap.json"
    with pytest.raises(TypeError, match="7") as info:
        store.snapshot(path)
    assert "my_pipeline" in str(info.value)
    assert not path.exists()


def test_restore_of_a_missing_file_raises_file_not_found_naming_the_path(tmp_path: Path) -> None:
    """Restoring from a path that does not exist raises FileNotFoundError naming the path."""
    path = tmp_path / "nowhere" / "snap.json"
    with pytest.raises(FileNotFoundError) as info:
        Store.restore(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2]", id="a-list"),
        pytest.param(b'{"name": "x"}', id="no-data"),
        pytest.param(b'{"name": "x", "data": [1]}', id="data-not-an-object"),
        pytest.param(b'{"name": 5, "data": {}}', id="name-not-a-string"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
def test_restore_of_a_bad_file_raises_value_error_naming_the_path(
    tmp_path: Path, content: bytes,
) -> None:
    """Restoring from a file that is not a Store snapshot raises ValueError naming the file."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:  # noqa: PT011  (the message is checked below)
        Store.restore(path)
    assert str(path) in str(info.value)


# ── the pocoflow 0.2 README, exactly as written there ───────────────────────


def test_seed_readme_store_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Store example of the 0.2 README runs as written (paths moved under tmp_path)."""
    step_file = str(tmp_path / "run_42" / "step_002.json")

    store = Store(
        data={"query": "", "result": ""},
        schema={"query": str, "result": str},   # verificación de tipo en cada escritura
        name="my_pipeline",
    )
    store["query"] = "explain quantum entanglement"
    with pytest.raises(TypeError):
        store["query"] = 42          # ← lanza TypeError inmediatamente

    store.add_observer(lambda key, old, new: print(f"{key}: {old!r} → {new!r}"))

    store.snapshot(step_file)
    store2 = Store.restore(step_file)

    assert "explain quantum entanglement" == store["query"]
    assert {"query": "explain quantum entanglement", "result": ""} == store2
    assert "my_pipeline" == store2.name
    store["result"] = "entangled"
    assert "result: '' → 'entangled'\n" == capsys.readouterr().out
