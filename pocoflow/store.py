"""Store: the typed, observable, checkpointable state every node of a run shares.

A real ``MutableMapping``: ``[]``, ``get``, ``update``, ``keys``, ``items``,
``in``, ``len``, iteration and ``del`` all work. It adds an optional schema
(checked on every write), observers, JSON snapshot/restore, transient keys
(never checkpointed: clients, locks, queues) and change tracking, which the
engine hands to checkpoint sinks so they can store only what changed.

A value the checkpoint codec cannot encode (a live object nobody declared
transient, as pocoflow 0.2 programs keep an LLM client under ``_llm``) is left
out of checkpoints and snapshots, listed under ``excluded`` like a transient
key, and reported once per key per run by a WARNING on ``pocoflow.db`` or
``pocoflow.store``; ``Store(..., strict_checkpoints=True)`` makes it an error
instead (:class:`~pocoflow.errors.CheckpointEncodeError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pocoflow.errors import SchemaError
from pocoflow.logging import get_logger

if TYPE_CHECKING:
    import logging
    from pathlib import Path

_log = get_logger("store")

Observer = Callable[[str, Any, Any], None]


class StoreChanges(NamedTuple):
    """What a stretch of code did to a Store since the previous ``take_changes()``.

    ``written`` keys were assigned, ``deleted`` keys removed; ``read`` keys had
    their value handed out (``[]``, ``get``), so the value may have been changed
    in place. ``read_all`` means every value may have been handed out
    (``items()``, ``values()``, ``as_dict()``).
    """

    written: frozenset[str]
    deleted: frozenset[str]
    read: frozenset[str] = frozenset()
    read_all: bool = False
    #: keys deleted and set again: they moved to the end of the store's key order
    reinserted: frozenset[str] = frozenset()


class TransientKeys(frozenset):  # type: ignore[type-arg]
    """A Store's transient keys (``Store.transient``), carrying its checkpoint policy.

    Checkpoint writers (the recorder, ``WorkflowDB.save_checkpoint``, JSON
    snapshots) receive the store's data and this set. Besides the keys declared
    transient it says what to do with a value the codec cannot encode:
    ``strict`` raises, otherwise the key is left out and :meth:`leave_out`
    warns once per key for the store's current run (``warned``).
    """

    __slots__ = ("store_name", "strict", "warned")

    store_name: str
    strict: bool
    warned: set[str]

    def __new__(
        cls, keys: Iterable[str] = (), strict: bool = False, store_name: str = "store"
    ) -> TransientKeys:
        self = super().__new__(cls, keys)
        self.strict = strict
        self.store_name = store_name
        self.warned = set()
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (TransientKeys, (frozenset(self), self.strict, self.store_name))

    def leave_out(self, error: Exception, logger: logging.Logger) -> None:
        """A value could not be encoded (*error*, a CheckpointEncodeError naming the key):
        re-raise it if strict, else log a WARNING the first time the key is left out."""
        if self.strict:
            raise error
        key = getattr(error, "key", "?")
        if key in self.warned:
            return
        self.warned.add(key)
        logger.warning(
            "Store '%s': %s It is left out of checkpoints and snapshots (listed under "
            "'excluded'), so a resume will not have it. Declaring it transient says so and "
            "silences this warning; Store(..., strict_checkpoints=True) makes it an error.",
            self.store_name,
            str(error).removeprefix("Checkpoint: "),
        )


class Store(MutableMapping[str, Any]):
    """Shared state of a pipeline run.

    ``data`` is copied; ``schema`` maps key → class, tuple of classes or typing
    form (``int | None``, ``list[str]``, ``Literal[...]``); schema keys are the
    required keys for :meth:`validate`. ``transient`` keys hold live objects
    that snapshots and checkpoints skip on purpose (and say so). Any other
    value the checkpoint codec cannot encode is skipped too, recorded as
    excluded and logged once per key per run, unless ``strict_checkpoints``
    asks for a :class:`~pocoflow.errors.CheckpointEncodeError` instead.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        schema: Mapping[str, Any] | None = None,
        name: str = "store",
        *,
        transient: Iterable[str] = (),
        strict_checkpoints: bool = False,
    ) -> None:
        if data is not None and not isinstance(data, Mapping):
            raise TypeError(
                f"Store '{name}': data must be a mapping such as a dict, got "
                f"{type(data).__name__}. Pass Store({{'key': value}})."
            )
        self._init(dict(data) if data else {}, schema, name, transient, strict_checkpoints)

    def _init(
        self,
        data: dict[str, Any],
        schema: Mapping[str, Any] | None,
        name: str,
        transient: Iterable[str],
        strict_checkpoints: bool = False,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Store name must be a str, got {type(name).__name__}.")
        self._data = data
        self._name = name
        self._schema: dict[str, Any] = dict(schema or {})
        self._checks: dict[str, Callable[[Any], bool]] = {}
        if self._schema:
            from pocoflow.typecheck import compile_check

            self._checks = {
                key: compile_check(spec, f"Store '{name}', key '{key}'")
                for key, spec in self._schema.items()
            }
        if isinstance(transient, str):
            transient = (transient,)
        self._transient = TransientKeys(transient, bool(strict_checkpoints), name)
        self._observers: list[Observer] = []
        self._run_id: str | None = None
        self._written: set[str] = set()
        self._deleted: set[str] = set()
        self._reinserted: set[str] = set()
        self._read: set[str] = set()
        self._read_all = False

    @classmethod
    def wrap(cls, data: dict[str, Any], name: str = "store") -> Store:
        """A Store that writes through to *data* itself (no copy).

        ``Flow.run(shared_dict)`` uses it, so PocketFlow code that reads
        ``shared[...]`` after the run sees the final state.
        """
        store = cls.__new__(cls)
        store._init(data, None, name, ())
        return store

    # ── mapping protocol ────────────────────────────────────────────────────

    def __getitem__(self, key: str) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            raise KeyError(
                f"Store '{self._name}' has no key {key!r} (keys: {sorted(map(str, self._data))}). "
                "Set it before reading, or use store.get(key, default)."
            ) from None
        self._read.add(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        check = self._checks.get(key)
        if check is not None and not check(value):
            self._reject(key, value)
        data = self._data
        old = data.get(key)
        data[key] = value
        self._written.add(key)
        deleted = self._deleted
        if deleted and key in deleted:
            deleted.discard(key)
            self._reinserted.add(key)
        if self._observers:
            self._notify(key, old, value)

    def __delitem__(self, key: str) -> None:
        if key not in self._data:
            raise KeyError(f"Store '{self._name}' has no key {key!r} to delete.")
        del self._data[key]
        self._written.discard(key)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        return self._data.get(key, default)

    def update(
        self,
        mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),  # type: ignore[override]
        **kwargs: Any,
    ) -> None:
        """Write every key of *mapping* (or each ``(key, value)`` pair), then *kwargs*,
        through the schema and observers.

        The first parameter is named ``mapping``, as in pocoflow 0.2, so
        ``store.update(mapping={...})`` writes the mapping's keys (a key named
        ``"mapping"`` is written with ``store["mapping"] = ...`` or a dict).
        """
        if hasattr(mapping, "keys"):  # as MutableMapping.update: keys() and [], no __iter__
            for key in mapping.keys():  # type: ignore[union-attr]  # noqa: SIM118
                self[key] = mapping[key]  # type: ignore[index]
        else:
            for key, value in mapping:
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def keys(self):  # type: ignore[override]  # dict views are faster and richer
        return self._data.keys()

    def items(self):  # type: ignore[override]
        self._read_all = True
        return self._data.items()

    def values(self):  # type: ignore[override]
        self._read_all = True
        return self._data.values()

    def __repr__(self) -> str:
        return f"Store(name={self._name!r}, keys={list(self._data)})"

    # Identity, as pocoflow 0.2's Store had it: apps key per-session data by the store.
    def __hash__(self) -> int:
        return object.__hash__(self)

    def __eq__(self, other: object) -> bool:
        """Two Stores are equal only if they are the same object (pocoflow 0.2); a Store
        equals a plain mapping (``store == {"a": 1}``) with the same contents."""
        if isinstance(other, Store):
            return self is other
        if isinstance(other, Mapping):
            return self._data == (other if isinstance(other, dict) else dict(other.items()))
        return NotImplemented

    # ── identity and schema ─────────────────────────────────────────────────

    @property
    def name(self) -> str:
        return self._name

    @property
    def schema(self) -> dict[str, Any]:
        return dict(self._schema)

    @property
    def run_id(self) -> str | None:
        """The id of the last run this store was run in (None before any), set by the
        engine when the run starts: a script finds a paused run's id this way,
        ``store = flow.run(store)`` then ``flow.resume(store.run_id, updates=...)``,
        and nodes and hooks can read their run's id."""
        return self._run_id

    @run_id.setter
    def run_id(self, value: str | None) -> None:
        self._run_id = value
        self._transient.warned.clear()  # a new run reports its left-out keys again

    @property
    def transient(self) -> frozenset[str]:
        """The keys declared transient: never checkpointed (live objects, on purpose)."""
        return self._transient

    @property
    def strict_checkpoints(self) -> bool:
        """True: a value checkpoints cannot encode is an error, not a recorded exclusion."""
        return self._transient.strict

    def _reject(self, key: str, value: Any) -> None:
        from pocoflow.typecheck import describe

        raise SchemaError(
            f"Store '{self._name}': key '{key}' expects {describe(self._schema[key])}, "
            f"got {type(value).__name__} ({_short_repr(value)}). Write a value of that "
            "type or change the schema."
        )

    def validate(self, *, types: bool = False) -> None:
        """Raise ``ValueError`` listing the schema keys that are missing.

        As in pocoflow 0.2, only presence is checked by default, so ``None``
        placeholders for results to come pass. ``types=True`` also lists the keys
        whose value does not fit the schema (values given to the constructor, or
        written through ``as_dict()``, are not checked on the way in).
        """
        missing = [k for k in self._schema if k not in self._data]
        wrong = (
            [k for k, ok in self._checks.items() if k in self._data and not ok(self._data[k])]
            if types
            else []
        )
        if missing or wrong:
            parts = []
            if missing:
                parts.append(f"required key(s) missing: {missing}")
            if wrong:
                parts.append(f"key(s) of the wrong type: {wrong}")
            raise ValueError(f"Store '{self._name}': {'; '.join(parts)}.")

    # ── observers ───────────────────────────────────────────────────────────

    def add_observer(self, callback: Observer) -> None:
        """Call ``callback(key, old, new)`` after every write; errors are logged, not raised."""
        if not callable(callback):
            raise TypeError(
                f"Store '{self._name}': add_observer needs a callable(key, old, new), "
                f"got {type(callback).__name__}."
            )
        self._observers.append(callback)

    def remove_observer(self, callback: Observer) -> None:
        self._observers = [o for o in self._observers if o is not callback]

    def _notify(self, key: str, old: Any, new: Any) -> None:
        for observer in list(self._observers):
            try:
                observer(key, old, new)
            except Exception:
                _log.warning(
                    "Store '%s': observer %r failed on key '%s'",
                    self._name,
                    observer,
                    key,
                    exc_info=True,
                )

    # ── change tracking (for checkpoint sinks) ──────────────────────────────

    def take_changes(self) -> StoreChanges:
        """Return the keys written, deleted and read since the last call, and start afresh.

        In-place mutation (``store["history"].append(x)``) is not a write, but
        the key was read first; a checkpoint sink compares the values of the
        keys written or read to find what really changed.
        """
        changes = StoreChanges(
            frozenset(self._written),
            frozenset(self._deleted),
            frozenset(self._read),
            self._read_all,
            frozenset(self._reinserted) if self._reinserted else frozenset(),
        )
        self._written.clear()
        self._deleted.clear()
        self._read.clear()
        self._reinserted.clear()
        self._read_all = False
        return changes

    # ── snapshots ───────────────────────────────────────────────────────────

    def untracked(self) -> dict[str, Any]:
        """The underlying dict, for sinks that only read it (checkpoints): unlike
        ``as_dict``, handing it out is not counted as reading every key."""
        return self._data

    def as_dict(self) -> dict[str, Any]:
        """The underlying dict itself (no copy): writes to it bypass the schema."""
        self._read_all = True
        return self._data

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to the snapshot JSON. Plain values are written as they are (0.2's
        format); datetime, tuple, set, Decimal, dataclasses and the other types
        checkpoints keep are tagged so :meth:`restore` gives them back. Transient keys,
        and keys whose value cannot be encoded, are left out and listed under
        ``"excluded"`` (the latter logged once per key per run); with
        ``strict_checkpoints`` such a value is a CheckpointEncodeError naming its key.
        """
        import json  # imported on use: keeps `import pocoflow` light

        from pocoflow.errors import CheckpointEncodeError
        from pocoflow.persistence.codec import to_jsonable

        policy = self._transient
        data: dict[str, Any] = {}
        excluded = [k for k in policy if k in self._data]
        for key, value in self._data.items():
            if key in policy:
                continue
            if not isinstance(key, str):
                raise TypeError(
                    f"Store '{self._name}': key {key!r} is a {type(key).__name__}; JSON "
                    "snapshots need str keys. Use a string key."
                )
            try:
                data[key] = to_jsonable(value, key)
            except CheckpointEncodeError as exc:
                if policy.strict:
                    raise CheckpointEncodeError(f"Store '{self._name}': {exc}") from None
                policy.leave_out(exc, _log)
                excluded.append(key)
        payload: dict[str, Any] = {"name": self._name, "data": data}
        if excluded:
            payload["excluded"] = sorted(excluded)
        return json.dumps(payload, indent=indent, ensure_ascii=False)

    def snapshot(self, path: str | Path) -> None:
        """Write the store to a JSON file atomically (a crash never leaves half a file)."""
        from pathlib import Path  # imported on use: keeps `import pocoflow` light

        write_atomic(Path(path), self.to_json())
        _log.debug("Store '%s' snapshot saved to %s", self._name, path)

    @classmethod
    def restore(
        cls,
        path: str | Path,
        schema: Mapping[str, Any] | None = None,
        *,
        transient: Iterable[str] = (),
        strict_checkpoints: bool = False,
    ) -> Store:
        """Load a store written by :meth:`snapshot` (its name is kept; keys the snapshot
        lists under ``"excluded"`` are absent)."""
        import json
        from pathlib import Path

        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Store snapshot file '{path}' does not exist; pass the path that "
                "store.snapshot() wrote."
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"Store snapshot file '{path}' is not valid JSON: {exc}.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            raise ValueError(
                f"Store snapshot file '{path}' has no 'data' object; it was not written "
                "by Store.snapshot()."
            )
        name = payload.get("name", "store")
        if not isinstance(name, str):
            raise ValueError(
                f"Store snapshot file '{path}' has a non-string 'name' ({name!r}); it was not "
                "written by Store.snapshot()."
            )
        from pocoflow.errors import CheckpointDecodeError
        from pocoflow.persistence.codec import decode_state

        try:
            data = decode_state(payload["data"])
        except CheckpointDecodeError as exc:
            raise CheckpointDecodeError(f"Store snapshot file '{path}': {exc}") from exc.__cause__
        return cls(
            data,
            schema=schema,
            name=name,
            transient=transient,
            strict_checkpoints=strict_checkpoints,
        )


def write_atomic(path: Path, text: str) -> None:
    """Write *text* to *path* through a temporary file and ``os.replace``."""
    import tempfile  # imported on use: keeps `import pocoflow` light
    from pathlib import Path

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def as_store(store: Store | dict[str, Any] | None) -> Store:
    """Accept a Store, a plain dict (written through) or None (a fresh Store)."""
    if isinstance(store, Store):
        return store
    if store is None:
        return Store()
    if isinstance(store, dict):
        return Store.wrap(store)
    raise TypeError(
        f"A flow runs on a Store or a dict, got {type(store).__name__}. "
        "Pass Store({...}) or a plain dict."
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
