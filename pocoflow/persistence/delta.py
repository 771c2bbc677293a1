"""Delta checkpoints: each step stores what changed, rebuilt exactly on load.

A checkpoint row is ``full`` (a JSON object of every key's encoded value, the
format pocoflow 0.2 wrote) or ``delta``: ``{"set": {key: value}, "del":
[key], "append": {key: [items]}}`` against the step before. Changes are found
by comparing encoded values, not by trusting writes, so in-place mutation is
caught; a list that only grew stores just its new items. A full snapshot is
written every ``full_every`` steps, or sooner once the deltas since the last
one outweigh the store, which bounds both storage and rebuild cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pocoflow.errors import CheckpointEncodeError
from pocoflow.persistence.codec import decode_object, encode_value

#: Values of these types cannot change in place: unwritten, they need no compare.
_IMMUTABLE = (str, int, float, bool, type(None), bytes)
FULL_EVERY = 1000


@dataclass(frozen=True, slots=True)
class Encoded:
    """One checkpoint row's payload."""

    kind: str  # "full" or "delta"
    store_json: str
    excluded: list[str]


class DeltaTracker:
    """Remembers a run's last checkpointed store (as encoded text) to write deltas."""

    def __init__(self, *, full_every: int = FULL_EVERY, allow_pickle: bool = False) -> None:
        self._full_every = full_every
        self._allow_pickle = allow_pickle
        self._texts: dict[str, str] = {}
        self._items: dict[str, list[str]] = {}  # per list key: its encoded items
        self._size = 0  # bytes of a full snapshot of the remembered store
        self._since_full = 0  # bytes of deltas since the last full snapshot
        self._steps_since_full = 0
        self._compare_all = True
        self._dirty: set[str] = set()

    def mark_written(self, keys: Iterable[str]) -> None:
        """Keys assigned since the last checkpoint (from ``Store.take_changes``)."""
        self._dirty.update(keys)

    def load(self, texts: Mapping[str, str]) -> None:
        """Start from a checkpoint read back from the database (a resume)."""
        self._texts = dict(texts)
        self._items = {}
        for key, text in self._texts.items():
            if text.startswith("["):
                self._items[key] = [json.dumps(i, ensure_ascii=False, separators=(",", ":"))
                                    for i in json.loads(text)]
        self._size = sum(len(k) + len(t) + 4 for k, t in self._texts.items())
        self._since_full = 0
        self._steps_since_full = 0
        self._compare_all = True  # a resume's updates may not be marked as writes

    def full(self, data: Mapping[str, Any], transient: Iterable[str] = ()) -> Encoded:
        """A full snapshot of *data*, which becomes the base of the next delta."""
        transient = frozenset(transient)
        texts: dict[str, str] = {}
        items: dict[str, list[str]] = {}
        for key, value in data.items():
            if key in transient:
                continue
            _check_key(key)
            if type(value) is list:
                encoded = [self._encode(item, key) for item in value]
                items[key] = encoded
                texts[key] = "[" + ",".join(encoded) + "]"
            else:
                texts[key] = self._encode(value, key)
        self._texts, self._items = texts, items
        body = _object(texts)
        self._size = len(body)
        self._since_full = 0
        self._steps_since_full = 0
        self._compare_all = False
        self._dirty.clear()
        return Encoded("full", body, _excluded(data, transient))

    def step(self, data: Mapping[str, Any], transient: Iterable[str] = ()) -> Encoded:
        """The checkpoint of the next step: a delta, or a full snapshot when due."""
        transient = frozenset(transient) if transient else frozenset()
        self._steps_since_full += 1
        if self._steps_since_full >= self._full_every:
            return self.full(data, transient)
        changed: dict[str, str] = {}
        appended: dict[str, list[str]] = {}
        texts, items = self._texts, self._items
        compare_all, dirty = self._compare_all, self._dirty
        for key, value in data.items():
            if transient and key in transient:
                continue
            old = texts.get(key)
            if (old is not None and not compare_all and key not in dirty
                    and type(value) in _IMMUTABLE):
                continue
            _check_key(key)
            if type(value) is list:
                encoded = [self._encode(item, key) for item in value]
                before = items.get(key)
                if before is not None and len(encoded) >= len(before) \
                        and encoded[:len(before)] == before:
                    if len(encoded) > len(before):
                        appended[key] = encoded[len(before):]
                        self._size += sum(len(i) + 1 for i in appended[key])
                        texts[key] = "[" + ",".join(encoded) + "]"
                        items[key] = encoded
                    continue
                items[key] = encoded
                text = "[" + ",".join(encoded) + "]"
            else:
                items.pop(key, None)
                text = self._encode(value, key)
            if text != old:
                changed[key] = text
                texts[key] = text
                self._size += len(text) - (len(old) if old is not None else -len(key) - 4)
        # every kept key has a text now, so extra texts are exactly the deleted keys
        kept = len(data) - (sum(1 for k in transient if k in data) if transient else 0)
        deleted = [k for k in texts if k not in data or k in transient] \
            if len(texts) != kept else []
        for key in deleted:
            self._size -= len(texts.pop(key)) + len(key) + 4
            items.pop(key, None)
        self._compare_all = False
        dirty.clear()
        parts = []
        if changed:
            parts.append('"set":' + _object(changed))
        if deleted:
            parts.append('"del":' + json.dumps(deleted, ensure_ascii=False))
        if appended:
            parts.append('"append":{' + ",".join(
                f"{json.dumps(k, ensure_ascii=False)}:[{','.join(v)}]"
                for k, v in appended.items()) + "}")
        body = "{" + ",".join(parts) + "}"
        self._since_full += len(body)
        if self._since_full > max(self._size, 1024):
            return self.full(data, transient)
        return Encoded("delta", body, _excluded(data, transient))

    def _encode(self, value: Any, key: str) -> str:
        return encode_value(value, key, allow_pickle=self._allow_pickle)


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise CheckpointEncodeError(
            f"Checkpoint: store key {key!r} is a {type(key).__name__}; checkpoints need str "
            "keys. Use a string key."
        )


def _object(texts: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v}"
                          for k, v in texts.items()) + "}"


def _excluded(data: Mapping[str, Any], transient: frozenset[str]) -> list[str]:
    return sorted(k for k in transient if k in data) if transient else []


def apply_row(state: dict[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The state (parsed JSON, tags kept) after checkpoint *row*, given the one before."""
    payload = json.loads(row["store_json"])
    if row.get("kind", "full") != "delta":
        return payload
    state.update(payload.get("set", {}))
    for key in payload.get("del", ()):
        state.pop(key, None)
    for key, new_items in payload.get("append", {}).items():
        state[key].extend(new_items)
    return state


def rebuild_json(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The full store (parsed JSON, tags kept) after the last of *rows*.

    *rows* are checkpoint rows in step order, starting at a full snapshot.
    """
    state: dict[str, Any] = {}
    for row in rows:
        state = apply_row(state, row)
    return state


def rebuild(rows: Iterable[Mapping[str, Any]], *, allow_pickle: bool = False) -> dict[str, Any]:
    """Like :func:`rebuild_json`, with every value decoded back to Python."""
    return {k: decode_object(v, allow_pickle=allow_pickle) for k, v in rebuild_json(rows).items()}


def texts_of(state: Mapping[str, Any]) -> dict[str, str]:
    """Encoded text per key of a rebuilt JSON state (to resume a DeltaTracker)."""
    return {k: json.dumps(v, ensure_ascii=False, separators=(",", ":")) for k, v in state.items()}
