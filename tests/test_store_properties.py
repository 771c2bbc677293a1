"""Property tests: Store agrees with a plain dict model under any sequence of edits."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pocoflow import Store

KEYS = st.sampled_from(["a", "b", "c", "d"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, JSON_VALUES),
        st.tuples(st.just("del"), KEYS, st.none()),
        st.tuples(st.just("take"), st.none(), st.none()),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(EDITS)
def test_contents_and_changes_match_a_dict_model(edits: list[tuple[str, Any, Any]]) -> None:
    """Any mix of writes, deletes and take_changes() leaves the Store equal to a dict,
    and each take_changes() reports exactly the keys whose last edit was a write/delete."""
    store, model = Store(), {}
    last_edit: dict[str, str] = {}
    for op, key, value in edits:
        if op == "set":
            store[key] = value
            model[key] = value
            last_edit[key] = "written"
        elif op == "del":
            if key in model:
                del store[key]
                del model[key]
                last_edit[key] = "deleted"
        else:
            changes = store.take_changes()
            assert {k for k, e in last_edit.items() if e == "written"} == changes.written
            assert {k for k, e in last_edit.items() if e == "deleted"} == changes.deleted
            last_edit.clear()
        assert model == dict(store.items())


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6), st.text(max_size=20))
def test_snapshot_then_restore_gives_back_the_same_store(data: dict[str, Any],
                                                         name: str) -> None:
    """Any JSON-shaped store survives snapshot → restore with its data and name."""
    store = Store(data, name=name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "snap.json"
        store.snapshot(path)
        restored = Store.restore(path)
        assert data == restored.as_dict()
        assert name == restored.name
