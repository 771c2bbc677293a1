"""Delta checkpoints: each step stores what changed, rebuilt exactly on load.

A checkpoint row is ``full`` (a JSON object of every key's encoded value, the
format pocoflow 0.2 wrote) or ``delta``: ``{"set": {key: value}, "del":
[key], "append": {key: [items]}}`` against the step before, applied in the
order del, set, append (a key deleted and set again in one step is in both, so
that it moves to the end of the store's key order, as it did in the store). Changes are found
by comparing values, not by trusting writes, so in-place mutation is caught;
a list that only grew stores just its new items. A full snapshot is
written every ``full_every`` steps, or sooner once the deltas since the last
one outweigh the store, which bounds both storage and rebuild cost.

A key left out of a checkpoint is listed in the row's ``excluded``: the keys
declared transient, and keys whose value the codec cannot encode (a live
object nobody declared transient). The latter are logged once per key per run
on ``pocoflow.db``, or raise :class:`CheckpointEncodeError` when the store
was created with ``strict_checkpoints=True`` (see
:class:`pocoflow.store.TransientKeys`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pocoflow.errors import CheckpointEncodeError
from pocoflow.logging import get_logger
from pocoflow.persistence.codec import decode_state, dumps, encode_value, parse_stored
from pocoflow.store import StoreChanges, TransientKeys

_log = get_logger("db")

#: Values of these types cannot change in place: unwritten, they need no compare.
_IMMUTABLE = (str, int, float, bool, type(None), bytes)
FULL_EVERY = 1000
#: Every key is compared at every step while the store is at most this many bytes,
#: else every (store bytes / this) steps: about this much comparing per step.
COMPARE_BYTES_PER_STEP = 16_384


@dataclass(frozen=True, slots=True)
class Encoded:
    """One checkpoint row's payload."""

    kind: str  # "full" or "delta"
    store_json: str
    excluded: list[str]  # keys left out: transient ones, and values that cannot be encoded


class _Exact:
    """A number or bool in a shadow copy that equals only a value of its own type
    (and a float only one of its own sign).

    Python finds ``1 == 1.0 == True`` and ``0.0 == -0.0``; a checkpoint must not
    (JSON tells them apart).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        value = self.value
        if type(other) is not type(value) or other != value:
            return False
        if isinstance(other, float):  # 0.0 and -0.0
            return math.copysign(1.0, value) == math.copysign(1.0, other)
        return True

    __hash__ = None  # type: ignore[assignment]


def _shadow(data: Any) -> Any:
    """A private copy of parsed checkpoint JSON that ``==`` compares type-strictly
    against the live value (kept on the left of ``==``)."""
    kind = type(data)
    if kind is dict:
        return {k: _shadow(v) for k, v in data.items()}
    if kind is list:
        return [_shadow(v) for v in data]
    if kind is str or data is None:
        return data
    return _Exact(data)


class DeltaTracker:
    """Remembers a run's last checkpointed store to write the next step's delta.

    Per key it keeps the encoded text, and for lists and dicts a shadow copy:
    an unchanged container is recognised by one C-speed ``==`` against the
    shadow instead of being encoded again, and a list that grew is recognised
    by comparing its old part, so only the new items are encoded.

    A step looks at the keys it touched: keys written or deleted, keys whose
    value was handed out (read, so maybe changed in place), and keys holding the
    very same object as one of those (an alias). What that cannot see is an
    in-place change made through a reference obtained in an earlier step (an
    object kept on a node or in a closure, another thread), or through an object
    nested inside another key's value; so every key is compared too: at every
    step while the store is at most :data:`COMPARE_BYTES_PER_STEP` bytes, else
    every (store bytes / that) steps, and at a run's last step
    (``compare_everything``). A step's cost stays near that many bytes of
    comparing (a C-speed ``==`` against the shadow), plus what the step did.
    """

    def __init__(self, *, full_every: int = FULL_EVERY, allow_pickle: bool = False) -> None:
        self._full_every = full_every
        self._allow_pickle = allow_pickle
        self._texts: dict[str, str] = {}
        self._items: dict[str, list[str]] = {}  # per list key: its encoded items
        self._shadows: dict[str, Any] = {}  # per list/dict key: see _shadow
        self._held: dict[str, int] = {}  # key -> id() of its mutable value
        self._holders: dict[int, set[str]] = {}  # id() of a mutable value -> its keys
        self._size = 0  # bytes of a full snapshot of the remembered store
        self._since_full = 0  # bytes of deltas since the last full snapshot
        self._steps_since_full = 0
        self._steps_since_compare = 0
        self._compare_all = True
        self._dirty: set[str] = set()  # written since the last checkpoint
        self._touched: set[str] = set()  # read or deleted since the last checkpoint
        self._reinserted: set[str] = set()  # deleted and set again: moved to the end
        self._unencodable: set[str] = set()  # keys left out: their value cannot be encoded
        self._plain_policy = TransientKeys()  # for callers that pass a plain set

    def mark_written(self, keys: Iterable[str]) -> None:
        """Keys assigned since the last checkpoint (from ``Store.take_changes``)."""
        self._dirty.update(keys)

    def mark_touched(self, keys: Iterable[str]) -> None:
        """Keys read or deleted since the last checkpoint: compared at the next step."""
        self._touched.update(keys)

    def note(self, changes: StoreChanges) -> None:
        """Everything ``Store.take_changes`` reported for a step."""
        self._dirty.update(changes.written)
        self._touched.update(changes.read)
        self._touched.update(changes.deleted)
        if changes.reinserted:
            self._reinserted.update(changes.reinserted)
        if changes.read_all:
            self._compare_all = True

    def compare_everything(self) -> None:
        """Compare every key at the next step (a run's last step, or a value changed
        behind the store's back)."""
        self._compare_all = True

    def load(self, texts: Mapping[str, str]) -> None:
        """Start from a checkpoint read back from the database (a resume)."""
        self._texts, self._items, self._shadows = {}, {}, {}
        self._held, self._holders = {}, {}
        self._unencodable = set()
        for key, text in texts.items():
            self._remember(key, text)
        self._size = len(_object(self._texts))
        self._since_full = 0
        self._steps_since_full = 0
        self._compare_all = True  # a resume's updates may not be marked as writes

    def _remember(self, key: str, text: str, items: list[str] | None = None) -> None:
        self._texts[key] = text
        if text[:1] not in ("[", "{"):
            self._items.pop(key, None)
            self._shadows.pop(key, None)
            return
        parsed = json.loads(text)
        self._shadows[key] = _shadow(parsed)
        if type(parsed) is list:
            self._items[key] = items if items is not None else [dumps(i) for i in parsed]
        else:
            self._items.pop(key, None)

    def _hold(self, key: str, value: Any) -> None:
        """Note which object *key* holds, to find its aliases later (mutable values only)."""
        ident = None if type(value) in _IMMUTABLE else id(value)
        old = self._held.get(key)
        if old == ident:
            return
        if old is not None:
            holders = self._holders[old]
            holders.discard(key)
            if not holders:
                del self._holders[old]
            del self._held[key]
        if ident is not None:
            self._held[key] = ident
            self._holders.setdefault(ident, set()).add(key)

    def _encode_key(self, key: str, value: Any) -> str:
        if type(value) is list:
            items = [self._encode(item, key) for item in value]
            text = "[" + ",".join(items) + "]"
            self._remember(key, text, items)
        else:
            text = self._encode(value, key)
            self._remember(key, text)
        return text

    def _policy(self, transient: Iterable[str]) -> TransientKeys:
        """The store's transient keys and checkpoint policy (a plain set: not strict)."""
        if isinstance(transient, TransientKeys):
            return transient
        if not isinstance(transient, (set, frozenset)):
            transient = frozenset(transient)
        policy = self._plain_policy
        if policy != transient:
            policy = self._plain_policy = TransientKeys(transient)
        return policy

    def _leave_out(self, key: str, error: CheckpointEncodeError, policy: TransientKeys) -> None:
        """*key*'s value cannot be encoded: leave it out and say so once (strict: raise)."""
        policy.leave_out(error, _log)
        self._unencodable.add(key)

    def full(
        self, data: Mapping[str, Any], transient: Iterable[str] = (), *, strict: bool | None = None
    ) -> Encoded:
        """A full snapshot of *data*, which becomes the base of the next delta.

        ``strict=True`` makes a value the codec cannot encode an error whatever the
        store's policy (for data that must reach another process whole: a queued
        run's input, a resume's updates)."""
        policy = self._policy(transient)
        if strict is not None and strict != policy.strict:
            policy = TransientKeys(policy, strict, policy.store_name)
        self._texts, self._items, self._shadows = {}, {}, {}
        self._held, self._holders = {}, {}
        self._unencodable = set()
        for key, value in data.items():
            if key in policy:
                continue
            _check_key(key)
            try:
                self._encode_key(key, value)
            except CheckpointEncodeError as error:
                self._leave_out(key, error, policy)
                continue
            self._hold(key, value)
        body = _object(self._texts)
        self._size = len(body)
        self._since_full = 0
        self._steps_since_full = 0
        self._steps_since_compare = 0
        self._compare_all = False
        self._dirty.clear()
        self._touched.clear()
        self._reinserted.clear()
        return Encoded("full", body, self._excluded(data, policy))

    def _candidates(self, data: Mapping[str, Any]) -> Iterable[str]:
        """The keys this step must look at: all of them, or the touched ones and their
        aliases (new keys in the store's order, so a rebuild keeps it)."""
        self._steps_since_compare += 1
        if self._compare_all or self._steps_since_compare >= math.ceil(
            self._size / COMPARE_BYTES_PER_STEP
        ):
            self._steps_since_compare = 0
            return list(data) + [k for k in self._texts if k not in data]
        keys = self._dirty | self._touched
        holders = self._holders
        if holders:  # add the aliases of touched mutable values (old or new object)
            held = self._held
            for key in self._touched:
                value = data.get(key)
                if key in held or type(value) not in _IMMUTABLE:
                    for ident in (held.get(key), id(value)):
                        if ident in holders:
                            keys |= holders[ident]
        texts = self._texts
        new = [k for k in keys if k not in texts and k in data]
        if not new:
            return keys
        if len(new) > 1:
            order = {k: i for i, k in enumerate(data)}
            new.sort(key=order.__getitem__)
        return [*(k for k in keys if k in texts), *new]

    def step(self, data: Mapping[str, Any], transient: Iterable[str] = ()) -> Encoded:
        """The checkpoint of the next step: a delta, or a full snapshot when due."""
        policy = self._policy(transient)
        self._steps_since_full += 1
        if self._steps_since_full >= self._full_every:
            return self.full(data, policy)
        changed: dict[str, str] = {}
        appended: dict[str, list[str]] = {}
        deleted: list[str] = []
        texts, shadows = self._texts, self._shadows
        compare_all, dirty = self._compare_all, self._dirty
        unencodable = self._unencodable
        reinserted = self._reinserted
        moved: list[str] = []
        for key in self._candidates(data):
            old = texts.get(key)
            if old is None and key in data:
                _check_key(key)  # a key that is not a str is an error, never left out
            elif reinserted and key in reinserted and key in data:
                moved.append(key)  # (it stays where it was in the last checkpoint else)
            if key not in data or (policy and key in policy):
                unencodable.discard(key)
                if old is not None:
                    self._drop(key)
                    deleted.append(key)
                continue
            value = data[key]
            try:
                if old is not None:
                    kind = type(value)
                    if kind in _IMMUTABLE and not compare_all and key not in dirty:
                        continue
                    self._hold(key, value)
                    shadow = shadows.get(key)
                    if shadow is not None:
                        # shadow on the left: its _Exact numbers decide. A value written
                        # this step that == calls equal is encoded all the same: == misses
                        # a dict's key order and a dict subclass (an OrderedDict).
                        if shadow == value and key not in dirty:
                            continue
                        if (
                            kind is list
                            and type(shadow) is list
                            and len(value) > len(shadow)
                            and shadow == value[: len(shadow)]
                        ):
                            appended[key] = self._append(key, value[len(shadow) :])
                            continue
                else:
                    self._hold(key, value)
                text = self._encode_key(key, value)
            except CheckpointEncodeError as error:
                self._leave_out(key, error, policy)
                self._hold(key, None)
                if old is not None:
                    self._drop(key)
                    deleted.append(key)
                continue
            if unencodable:
                unencodable.discard(key)
            if text != old:
                changed[key] = text
                self._size += len(text) - (len(old) if old is not None else -len(key) - 4)
        if moved:  # deleted and set again: "del" then "set" puts them at the end, in
            # the store's order (applied in that order: see apply_row)
            for key in moved:
                if key in texts:
                    deleted.append(key)
                    changed[key] = texts[key]
                    appended.pop(key, None)  # (its whole text is set)
            position = {k: i for i, k in enumerate(data)}
            changed = {k: changed[k] for k in sorted(changed, key=position.__getitem__)}
        reinserted.clear()
        self._compare_all = False
        dirty.clear()
        self._touched.clear()
        parts = []
        if changed:
            parts.append('"set":' + _object(changed))
        if deleted:
            parts.append('"del":' + dumps(deleted))
        if appended:
            parts.append(
                '"append":{'
                + ",".join(f"{dumps(k)}:[{','.join(v)}]" for k, v in appended.items())
                + "}"
            )
        body = "{" + ",".join(parts) + "}"
        self._since_full += len(body)
        if self._since_full > max(self._size, 1024):
            return self.full(data, policy)
        return Encoded("delta", body, self._excluded(data, policy))

    def _drop(self, key: str) -> None:
        """Forget *key* (deleted, now transient, or no longer encodable)."""
        self._size -= len(self._texts.pop(key)) + len(key) + 4
        self._items.pop(key, None)
        self._shadows.pop(key, None)
        self._hold(key, None)

    def _excluded(self, data: Mapping[str, Any], policy: TransientKeys) -> list[str]:
        """The keys of *data* this checkpoint leaves out: transient or not encodable."""
        if not self._unencodable:
            return sorted(k for k in policy if k in data) if policy else []
        self._unencodable = {k for k in self._unencodable if k in data and k not in policy}
        return sorted({k for k in policy if k in data} | self._unencodable)

    def _append(self, key: str, new: list[Any]) -> list[str]:
        """Record items appended to list *key*; return their encoded texts."""
        encoded = [self._encode(item, key) for item in new]
        items = self._items[key]
        items.extend(encoded)
        text = self._texts[key]
        self._texts[key] = text[:-1] + ("," if len(text) > 2 else "") + ",".join(encoded) + "]"
        self._shadows[key].extend(_shadow(json.loads(t)) for t in encoded)
        self._size += sum(len(t) + 1 for t in encoded)
        return encoded

    def _encode(self, value: Any, key: str) -> str:
        return encode_value(value, key, allow_pickle=self._allow_pickle)


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise CheckpointEncodeError(
            f"Checkpoint: store key {key!r} is a {type(key).__name__}; checkpoints need str "
            "keys. Use a string key."
        )


def _object(texts: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{dumps(k)}:{v}" for k, v in texts.items()) + "}"


def apply_row(state: dict[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The state (parsed JSON, tags kept) after checkpoint *row*, given the one before."""
    where = f"Checkpoint of run {row.get('run_id', '?')!r} at step {row.get('step', '?')}"
    payload = parse_stored(row["store_json"], where)
    if row.get("kind", "full") != "delta":
        return payload
    for key in payload.get("del", ()):  # before "set": a key in both moved to the end
        state.pop(key, None)
    state.update(payload.get("set", {}))
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
    return decode_state(rebuild_json(rows), allow_pickle=allow_pickle)


def texts_of(state: Mapping[str, Any]) -> dict[str, str]:
    """Encoded text per key of a rebuilt JSON state (to resume a DeltaTracker)."""
    return {k: dumps(v) for k, v in state.items()}
