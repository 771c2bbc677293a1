"""Delta checkpoints rebuild exactly the store of every step, and store only what changed."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocoflow import Flow, Node, Store, WorkflowDB
from pocoflow.persistence.codec import decode_object
from pocoflow.persistence.delta import DeltaTracker, Encoded, rebuild, rebuild_json, texts_of

TRANSIENT = "t"  # a transient key: never checkpointed, may hold anything


def shape_of(value: Any) -> Any:
    """A hashable description of *value* with every type inside it (tuple vs list,
    set vs frozenset, 1 vs 1.0 vs True, 0.0 vs -0.0 and dict key orders all differ)."""
    kind = type(value)
    if kind in (list, tuple):
        return (kind.__name__, tuple(shape_of(v) for v in value))
    if kind in (set, frozenset):
        return (kind.__name__, frozenset(shape_of(v) for v in value))
    if kind is dict:
        return ("dict", tuple((shape_of(k), shape_of(v)) for k, v in value.items()))
    if kind is float:
        return ("float", repr(value))
    if kind is dt.datetime:
        return ("datetime", value.isoformat())
    return (kind.__name__, value)


def state_shape(state: dict[str, Any]) -> Any:
    """The shape of a whole store: each value exactly, the keys in their order (a key
    deleted and set again in a step moves to the end, in the checkpoint too)."""
    return tuple((key, shape_of(value)) for key, value in state.items())


def expected_state(store: Store) -> Any:
    """What a checkpoint of *store* must rebuild to: a deep copy minus transient keys."""
    return state_shape({k: copy.deepcopy(v) for k, v in store.items() if k != TRANSIENT})


def as_row(encoded: Encoded) -> dict[str, Any]:
    return {"kind": encoded.kind, "store_json": encoded.store_json}


# ── strategies: store values and store operations ───────────────────────────

HASHABLE = st.none() | st.booleans() | st.integers(-50, 50) | st.text(max_size=4)
SCALARS = (HASHABLE | st.floats(allow_nan=False)
           | st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    | st.lists(inner, max_size=3).map(tuple)
    | st.sets(HASHABLE, max_size=3)
    | st.frozensets(HASHABLE, max_size=3),
    max_leaves=10,
)
KEYS = st.sampled_from(["a", "b", "c", TRANSIENT])
OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("del"), KEYS),
    st.tuples(st.just("append"), KEYS, VALUES),  # in place when the value is a list
    st.tuples(st.just("mutate"), KEYS, st.text(max_size=2), VALUES),  # in place in a dict
    st.tuples(st.just("deep"), KEYS, VALUES),  # append to a list inside a dict, in place
    st.tuples(st.just("shorten"), KEYS),  # replace a list with a shorter one
    st.tuples(st.just("pop"), KEYS),  # shorten a list in place
    st.tuples(st.just("alias"), KEYS, KEYS),  # two keys, one object
    st.tuples(st.just("live"),),  # the transient key holds something uncheckpointable
    st.tuples(st.just("clear"),),
    st.tuples(st.just("resume"),),  # a new tracker loaded from the rows (another process)
)
STEPS = st.lists(st.lists(OPS, max_size=4), min_size=1, max_size=12)
INITIAL = st.dictionaries(KEYS, VALUES, max_size=4)


def apply(store: Store, op: tuple[Any, ...]) -> set[str]:
    """Apply one operation; return the keys it touched in place (not by assignment)."""
    name, key = op[0], op[1] if len(op) > 1 else None
    current = store.get(key) if key is not None else None
    if name == "set":
        store[key] = op[2]
    elif name == "del":
        if key in store:
            del store[key]
    elif name == "append":
        if type(current) is list:
            current.append(op[2])
            return {key}
        store[key] = [op[2]]
    elif name == "mutate":
        if type(current) is dict:
            current[op[2]] = op[3]
            return {key}
        store[key] = {op[2]: op[3]}
    elif name == "deep":
        if type(current) is dict:
            inner = current.get("inner")
            if type(inner) is list:
                inner.append(op[2])
            else:
                current["inner"] = [op[2]]
            return {key}
        store[key] = {"inner": [op[2]]}
    elif name == "shorten":
        if type(current) is list:
            store[key] = current[: len(current) // 2]
    elif name == "pop":
        if type(current) is list and current:
            current.pop()
            return {key}
    elif name == "alias":
        if key in store and key != TRANSIENT:
            store[op[2]] = current
    elif name == "live":
        store[TRANSIENT] = object()
    elif name == "clear":
        store.clear()
    return set()


def run_tracker(initial: dict[str, Any], steps: list[list[tuple[Any, ...]]], *,
                full_every: int, mark_in_place: bool) -> None:
    """Feed a DeltaTracker step by step and check every step's rebuild against the store.

    The tracker is told what the Store saw (keys written, deleted and read), as the
    recorder does; with *mark_in_place* it is also told the keys mutated in place,
    otherwise it must find those changes from the reads (an alias of a read key too).
    """
    store = Store(copy.deepcopy(initial), transient={TRANSIENT})
    tracker = DeltaTracker(full_every=full_every)
    rows = [as_row(tracker.full(store.untracked(), store.transient))]
    expected = [expected_state(store)]
    store.take_changes()
    since_full = 0
    for ops in steps:
        touched: set[str] = set()
        for op in ops:
            if op[0] == "resume":  # as Recorder does on resume: load the rebuilt state
                tracker = DeltaTracker(full_every=full_every)
                tracker.load(texts_of(rebuild_json(rows)))
                since_full = 0
            else:
                touched |= apply(store, op)
        tracker.note(store.take_changes())
        if mark_in_place:
            tracker.mark_touched(touched)
        encoded = tracker.step(store.untracked(), store.transient)
        rows.append(as_row(encoded))
        expected.append(expected_state(store))
        since_full = 0 if encoded.kind == "full" else since_full + 1
        assert since_full < full_every
        assert ([TRANSIENT] if TRANSIENT in store else []) == encoded.excluded
    assert "full" == rows[0]["kind"]
    for i in range(len(rows)):
        last_full = max(j for j in range(i + 1) if rows[j]["kind"] == "full")
        assert expected[i] == state_shape(rebuild(rows[last_full:i + 1]))
        assert expected[i] == state_shape(rebuild(rows[:i + 1]))


@pytest.mark.parametrize("full_every", [1000, 3, 1])
@settings(max_examples=200, deadline=None)
@given(INITIAL, STEPS)
def test_rebuild_equals_the_store_at_every_step_when_told_every_write(
        full_every: int, initial: dict[str, Any], steps: list[list[tuple[Any, ...]]]) -> None:
    """With every changed key marked written, the rows from the last full snapshot up to
    any step rebuild exactly that step's store (types included, transient key left out)."""
    run_tracker(initial, steps, full_every=full_every, mark_in_place=True)


@pytest.mark.parametrize("full_every", [1000, 3])
@settings(max_examples=300, deadline=None)
@given(INITIAL, STEPS)
def test_rebuild_equals_the_store_at_every_step_with_unmarked_in_place_mutation(
        full_every: int, initial: dict[str, Any], steps: list[list[tuple[Any, ...]]]) -> None:
    """Told only the assigned keys (as the Store reports them), the tracker still catches
    in-place appends, pops and nested mutations: every step rebuilds exactly."""
    run_tracker(initial, steps, full_every=full_every, mark_in_place=False)


# ── what gets stored ────────────────────────────────────────────────────────


def test_append_only_list_stores_only_the_new_items() -> None:
    """A list that grows by in-place appends is stored as its new items only: every delta
    row has the same size however long the list gets, and total storage grows linearly."""
    store = Store({"history": [], "n": 0})
    tracker = DeltaTracker()
    rows = [tracker.full(store)]
    store.take_changes()
    totals = {}
    for i in range(1, 201):
        store["history"].append(f"{i:04d}" + "x" * 996)
        tracker.note(store.take_changes())
        rows.append(tracker.step(store.untracked()))
        if i in (100, 200):
            totals[i] = sum(len(r.store_json) for r in rows)
    deltas = [r for r in rows if r.kind == "delta"]
    assert {len(deltas[0].store_json)} == {len(r.store_json) for r in deltas}
    assert {"append": {"history": ["0200" + "x" * 996]}} == json.loads(rows[-1].store_json)
    assert 180 <= len(deltas)
    assert totals[200] <= 2 * 1000 * 200
    assert totals[200] / totals[100] <= 2.2
    assert store.as_dict() == rebuild([{"kind": r.kind, "store_json": r.store_json}
                                       for r in rows])


def test_unchanged_keys_are_not_written_again() -> None:
    """Only the key that changed is in a delta: a big string, an equal list re-assigned,
    and a dict left alone are not written again."""
    store = Store({"big": "x" * 5000, "cfg": {"a": [1, 2]}, "tags": ["p", "q"], "n": 0})
    tracker = DeltaTracker()
    tracker.full(store)
    store.take_changes()
    for i in range(1, 6):
        store["n"] = i
        store["tags"] = ["p", "q"]  # a new, equal object
        tracker.note(store.take_changes())
        encoded = tracker.step(store.untracked())
        assert "delta" == encoded.kind
        assert {"set": {"n": i}} == json.loads(encoded.store_json)
    tracker.note(store.take_changes())
    assert "{}" == tracker.step(store.untracked()).store_json


def test_a_write_that_only_equals_the_old_value_is_stored() -> None:
    """``==`` calls 0.0 and -0.0 equal, and two dicts with their keys in another order;
    a checkpoint must not: -0.0 written over 0.0 (assigned or in place) and a dict
    re-assigned with its keys reordered rebuild as written, and an OrderedDict (which the
    codec refuses) assigned over an equal dict is left out, not stored as the old dict."""
    from collections import OrderedDict

    store = Store({"zero": [0.0], "inplace": [0.0], "sections": {"intro": 1, "body": 2},
                   "od": {"a": 1}})
    tracker = DeltaTracker()
    rows = [as_row(tracker.full(store))]
    store.take_changes()
    store["zero"] = [-0.0]
    store["inplace"][0] = -0.0
    store["sections"] = {"body": 2, "intro": 1}
    store["od"] = OrderedDict(a=1)
    tracker.note(store.take_changes())
    encoded = tracker.step(store.untracked())
    rows.append(as_row(encoded))
    assert ["od"] == encoded.excluded
    rebuilt = rebuild(rows)
    assert "od" not in rebuilt
    assert shape_of([-0.0]) == shape_of(rebuilt["zero"]) == shape_of(rebuilt["inplace"])
    assert ["body", "intro"] == list(rebuilt["sections"])


def test_a_key_deleted_and_set_again_moves_to_the_end_in_the_checkpoint_too() -> None:
    """`del store["a"]; store["a"] = v` in one step moves "a" to the end of the store's
    keys; the checkpoint rebuilds the same order (it kept "a" where it was), a list key
    that also grew included, and a step after it stores only what changed again."""
    store = Store({"a": [1], "b": 2, "c": 3})
    tracker = DeltaTracker()
    rows = [as_row(tracker.full(store))]
    store.take_changes()
    kept = store["a"]
    del store["a"]
    store["d"] = 4
    kept.append(2)
    store["a"] = kept
    tracker.note(store.take_changes())
    rows.append(as_row(tracker.step(store.untracked())))
    assert ["b", "c", "d", "a"] == list(store) == list(rebuild(rows))
    assert state_shape(store.as_dict()) == state_shape(rebuild(rows))
    store["b"] = 5
    tracker.note(store.take_changes())
    rows.append(as_row(tracker.step(store.untracked())))
    assert {"set": {"b": 5}} == json.loads(rows[-1]["store_json"])
    assert state_shape(store.as_dict()) == state_shape(rebuild(rows))


def test_a_step_of_a_big_store_looks_only_at_the_keys_it_touched() -> None:
    """In a store over COMPARE_BYTES_PER_STEP, a step that writes one small key compares
    and encodes only that key: the big list of dicts beside it is compared only every
    (store bytes / COMPARE_BYTES_PER_STEP) steps, so a step's cost follows what it did."""
    from pocoflow.persistence.delta import COMPARE_BYTES_PER_STEP

    calls = {"n": 0}

    class Counting(list):
        def __eq__(self, other: object) -> bool:
            calls["n"] += 1
            return list.__eq__(self, other)  # type: ignore[arg-type]

    store = Store({"big": [{"i": i} for i in range(5000)], "small": 0})
    tracker = DeltaTracker()
    size = len(tracker.full(store.untracked()).store_json)
    every = -(-size // COMPARE_BYTES_PER_STEP)
    assert 3 <= every
    tracker._shadows["big"] = Counting(tracker._shadows["big"])
    store.take_changes()
    for i in range(1, 3 * every + 1):
        store["small"] = i
        tracker.note(store.take_changes())
        assert {"set": {"small": i}} == json.loads(tracker.step(store.untracked()).store_json)

    assert 3 == calls["n"]


def test_a_change_through_a_reference_kept_from_an_earlier_step_is_caught() -> None:
    """A list changed in place through a reference kept from an earlier step (its key not
    read in this step; a node's own attribute, say) is in that very step's checkpoint
    while the store is small; in a bigger one, at the next full compare, or when the
    run's last step asks for one."""
    store = Store({"log": [], "n": 0})
    tracker = DeltaTracker()
    tracker.full(store.untracked())
    kept = store["log"]
    store.take_changes()
    for step in range(1, 4):
        kept.append(f"behind the store's back {step}")
        store["n"] = step
        tracker.note(store.take_changes())
        assert {"append": {"log": [f"behind the store's back {step}"]}, "set": {"n": step}} \
            == json.loads(tracker.step(store.untracked()).store_json)

    big = Store({"log": [], "ballast": ["x" * 100] * 1000, "n": 0})
    tracker = DeltaTracker()
    tracker.full(big.untracked())
    kept = big["log"]
    big.take_changes()
    kept.append("again")
    big["n"] = 1
    tracker.note(big.take_changes())
    assert {"set": {"n": 1}} == json.loads(tracker.step(big.untracked()).store_json)
    big["n"] = 0
    tracker.note(big.take_changes())
    tracker.compare_everything()  # what the recorder does at a run's last step
    assert {"append": {"log": ["again"]}, "set": {"n": 0}} == json.loads(
        tracker.step(big.untracked()).store_json)


def test_a_change_through_an_alias_of_a_read_key_is_seen_at_once() -> None:
    """Two keys holding one list: appending through one key marks the other as changed
    in the same step."""
    shared: list[int] = []
    store = Store({"a": shared, "b": shared})
    tracker = DeltaTracker()
    tracker.full(store.untracked())
    store.take_changes()
    store["a"].append(1)
    tracker.note(store.take_changes())

    assert {"append": {"a": [1], "b": [1]}} == json.loads(
        tracker.step(store.untracked()).store_json)


def test_full_snapshot_is_written_when_deltas_outweigh_the_store() -> None:
    """When each step rewrites the whole store, a full snapshot comes back before the deltas
    since the last one grow past the store's size, so a rebuild never reads much more than
    one store's worth of deltas."""
    store = Store({"doc": ""})
    tracker = DeltaTracker()
    rows = [tracker.full(store)]
    for i in range(1, 21):
        store["doc"] = chr(ord("a") + i) * 3000
        tracker.note(store.take_changes())
        rows.append(tracker.step(store.untracked()))
    kinds = [r.kind for r in rows]
    assert "full" in kinds[1:]
    since_full = 0
    for row in rows[1:]:
        since_full = 0 if row.kind == "full" else since_full + len(row.store_json)
        assert since_full <= 2 * 3100
    assert {"doc": "u" * 3000} == rebuild([{"kind": r.kind, "store_json": r.store_json}
                                           for r in rows])


def test_full_every_bounds_the_steps_between_full_snapshots() -> None:
    """With full_every=3 a full snapshot is written every third step even for tiny changes."""
    store = Store({"n": 0})
    tracker = DeltaTracker(full_every=3)
    kinds = [tracker.full(store).kind]
    for i in range(1, 10):
        store["n"] = i
        tracker.note(store.take_changes())
        kinds.append(tracker.step(store.untracked()).kind)
    assert ["full", "delta", "delta", "full", "delta", "delta", "full", "delta", "delta",
            "full"] == kinds


# ── end to end: a real Flow on a real database ──────────────────────────────

LOOPS = 14


class Work(Node):
    """Changes the store a different way each step, mostly in place."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        i = store["i"]
        store["history"].append({"turn": i, "text": f"message {i}"})
        store["nested"]["level"]["seen"].append(i)
        store["nested"]["counts"][str(i % 3)] = i
        if i % 4 == 0:
            store["history"] = store["history"][-2:]  # a shorter list
        if i % 5 == 1:
            store["pair"] = (i, {"at": dt.datetime(2024, 1, 1, i, tzinfo=dt.timezone.utc)})
        if i % 3 == 2:
            store.get("labels", set()).add(f"l{i}")
            store.setdefault("labels", {"first"})
        if i == 6:
            del store["pair"]
        if i == 9:
            store["history"].clear()
        store["client"] = object()  # transient: never checkpointed
        store["i"] = i + 1
        return "again" if i + 1 < LOOPS else "done"


class End(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["done"] = True
        return "default"


def test_flow_checkpoints_equal_deep_copies_of_every_step(db_url: str) -> None:
    """A real Flow on SQLite/PostgreSQL: get_checkpoints and load_checkpoint of every step
    equal a deep copy of the store taken in the node_end hook of that step."""
    db = WorkflowDB(db_url, full_every=4)
    work = Work()
    work.then("again", work)
    work.then("done", End())
    flow = Flow(work, db=db, run_id="delta-e2e", max_steps=LOOPS + 5)
    snapshots: list[dict[str, Any]] = []
    flow.on("node_end", lambda name, action, elapsed, store: snapshots.append(
        copy.deepcopy({k: v for k, v in store.items() if k != "client"})))
    store = Store({"i": 0, "history": [], "nested": {"level": {"seen": []}, "counts": {}}},
                  transient={"client"})
    flow.run(store)

    checkpoints = db.get_checkpoints("delta-e2e")
    assert list(range(LOOPS + 1)) == [c["step"] for c in checkpoints]
    assert {"full", "delta"} == {c["kind"] for c in checkpoints}
    assert LOOPS + 1 == len(snapshots)
    for step, (checkpoint, snapshot) in enumerate(zip(checkpoints, snapshots, strict=True)):
        stored = {k: decode_object(v) for k, v in json.loads(checkpoint["store_json"]).items()}
        assert state_shape(snapshot) == state_shape(stored)
        loaded = db.load_checkpoint("delta-e2e", step)
        assert state_shape(snapshot) == state_shape(loaded.as_dict())
        assert {"client"} == set(loaded.transient)
    assert True is snapshots[-1]["done"]
