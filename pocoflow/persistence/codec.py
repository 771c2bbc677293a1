"""Checkpoint codec: store values to JSON text and back, with no silent loss.

Plain JSON values are written as they are, so a checkpoint of plain data reads
like pocoflow 0.2's. Other types travel as a tagged object
``{"__pf__": tag, ...}``: datetime, date, time, timedelta, bytes, set,
frozenset, tuple, Decimal, UUID, Path, complex, enums, dicts with non-str keys,
dataclasses and pydantic models. A value the codec cannot encode raises
:class:`CheckpointEncodeError` naming the key and its type (checkpoint writers
then leave that key out and record it, unless the Store is
``strict_checkpoints``); pickle is used only when the database was opened
with ``allow_pickle=True``.

**Decoding trusts nothing.** A checkpoint row or snapshot file may have been
written by anyone, so decoding never imports a module and never calls a name
read from the data unless that type is *allowed*:

- the codec's own types (the ones above, and the ``pathlib`` classes);
- types registered with :func:`register_type` (also a class decorator) or
  :func:`register_types`;
- types this process has encoded itself: the encoder notes each class it tags.

The four tags that name a class (``enum``, ``path``, ``dataclass``,
``pydantic``) find it by its stored ``module:qualname`` in that allow-list, one
dict lookup; a name not in it is a :class:`CheckpointDecodeError` naming the
store key, the type as stored and the ``register_type`` call that allows it,
and nothing is imported or run. An allowed class must also be of the kind its
tag claims (an Enum, a PurePath, a dataclass, a pydantic-style model with
``model_validate``) before it is called; then only that class's own code runs on
the stored data (its ``__init__``, ``__post_init__``, validators, ``_missing_``).
Malformed input (a missing field, a wrong type, nesting too deep, an int too
long) is a CheckpointDecodeError too, never a KeyError or TypeError from inside
the codec. ``pickle`` rows are loaded only with ``allow_pickle=True``, which
trusts the database completely. Callers pass the store key (``key=``, or
:func:`decode_state` for a whole checkpoint) so errors can name it.

**Numbers.** NaN and ±Infinity are written as Python's json writes them
(``NaN``, ``Infinity``, ``-Infinity``) and read back as floats: checkpoint
columns are text, so they round-trip on SQLite and PostgreSQL, but such a row
is not strict JSON (a strict parser, or a cast to ``jsonb``, rejects it). An
int with more digits than Python turns into text
(``sys.get_int_max_str_digits()``, 4300 by default) is an encode error naming
the key: store it as a str or a Decimal.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path, PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any, TypeVar

from pocoflow.errors import CheckpointDecodeError, CheckpointEncodeError

TAG = "__pf__"
_PLAIN = (str, int, float, bool, type(None))
_T = TypeVar("_T", bound=type)


_utf8_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ascii_dumps = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """Compact JSON that keeps non-ASCII text readable (one encoder object: json.dumps
    builds one per call), escaping only what UTF-8 cannot hold (lone surrogates)."""
    text = _utf8_dumps(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return _ascii_dumps(value)
    return text


# ── the allow-list: the only classes a checkpoint may name ─────────────────

#: ``module:qualname`` → class: built-ins, registered types and types this process encoded.
_ALLOWED: dict[str, type] = {}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


for _cls in (PurePath, PurePosixPath, PureWindowsPath, Path, PosixPath, WindowsPath):
    # the names other Python versions write too (3.13 defines them in pathlib._local)
    for _module in ("pathlib", "pathlib._local", _cls.__module__):
        _ALLOWED[f"{_module}:{_cls.__qualname__}"] = _cls
del _cls, _module


def register_type(cls: _T, /) -> _T:
    """Allow checkpoints to load values of *cls*, a dataclass, pydantic model, Enum or
    PurePath subclass; returns *cls*, so it also works as a class decorator::

        @pocoflow.register_type
        @dataclass
        class Order: ...

    Register a type in every process that loads checkpoints holding it (a resume, the
    monitor), before loading. Encoding needs no registration.
    """
    _ALLOWED[_class_path(_registrable(cls))] = cls
    return cls


def register_types(*classes: type) -> None:
    """Like :func:`register_type` for several classes; if one cannot be registered, none is."""
    for cls in classes:
        _registrable(cls)
    for cls in classes:
        _ALLOWED[_class_path(cls)] = cls


def _registrable(cls: Any) -> type:
    if not isinstance(cls, type):
        raise TypeError(
            f"register_type takes a class, got {_article(type(cls).__name__)} "
            f"{type(cls).__name__} ({_short(repr(cls))}). Pass the class itself."
        )
    if not any(is_kind(cls) for is_kind in _KINDS.values()):
        raise TypeError(
            f"register_type: {cls.__qualname__} is not a dataclass, pydantic model, Enum or "
            "PurePath subclass, so checkpoints cannot hold it (registering it would not "
            "help). Store plain data instead, or open the database with allow_pickle=True."
        )
    return cls


def _is_model(cls: type) -> bool:
    """What the encoder tags ``pydantic``: a class with model_dump and model_validate."""
    return hasattr(cls, "model_dump") and hasattr(cls, "model_validate")


#: Per tag that names a class: is an allowed class of the kind the tag claims?
_KINDS: dict[str, Callable[[type], bool]] = {
    "enum": lambda cls: issubclass(cls, enum.Enum),
    "path": lambda cls: issubclass(cls, PurePath),
    "dataclass": dataclasses.is_dataclass,
    "pydantic": _is_model,
}


#: class → stored name, for the classes encoded so far (saves formatting it each time)
_NAMES: dict[type, str] = {}


def _noted(cls: type) -> str:
    """*cls*'s stored name; the class is allowed from now on (this process encoded it)."""
    name = _NAMES.get(cls)
    if name is None:
        if len(_NAMES) >= 4096:  # bounded, even for classes made on the fly
            _NAMES.clear()
        name = _NAMES[cls] = _class_path(cls)
    if _ALLOWED.get(name) is not cls:
        _ALLOWED[name] = cls
    return name


# ── encoding ───────────────────────────────────────────────────────────────


def encode_value(value: Any, key: str, *, allow_pickle: bool = False) -> str:
    """The JSON text of one store value; errors name *key*.

    A :class:`CheckpointEncodeError` raised here also carries ``key`` and
    ``type_name`` (the type that could not be encoded), so a checkpoint writer
    can leave the key out and say why (see ``Store(strict_checkpoints=...)``).
    """
    kind = type(value)
    try:
        if kind is str or kind is float:
            return dumps(value)
        if kind is int:
            return int.__repr__(value)
        return dumps(_to_json(value, allow_pickle))
    except _Unencodable as exc:
        raise _encode_error(
            f"Checkpoint: store key '{key}' holds {_article(exc.type_name)} {exc.type_name}"
            f"{exc.where}, which "
            "the checkpoint codec cannot encode. Store plain data there (str, numbers, "
            "lists, dicts, datetime, dataclasses, pydantic models...), or declare the key "
            f"transient: Store(..., transient={{'{key}'}}).",
            key,
            exc.type_name,
        ) from None
    except RecursionError:
        raise _encode_error(
            f"Checkpoint: store key '{key}' holds a value nested too deep, or that contains "
            "itself; checkpoints need a tree of plain values.",
            key,
            kind.__name__,
        ) from None
    except ValueError as exc:  # e.g. a circular reference, an int too long for text
        if "integer string conversion" in str(exc):
            raise _encode_error(
                f"Checkpoint: store key '{key}' holds an int with more digits than Python "
                "writes as text (sys.get_int_max_str_digits()), so it cannot be checkpointed. "
                "Store it as a str or a Decimal (Decimal(n)) instead.",
                key,
                "int",
            ) from None
        raise _encode_error(
            f"Checkpoint: store key '{key}' cannot be encoded: {exc}.", key, kind.__name__
        ) from None


def _encode_error(message: str, key: str, type_name: str) -> CheckpointEncodeError:
    error = CheckpointEncodeError(message)
    error.key = key  # type: ignore[attr-defined]
    error.type_name = type_name  # type: ignore[attr-defined]
    return error


def to_jsonable(value: Any, key: str, *, allow_pickle: bool = False) -> Any:
    """The JSON-ready form of one store value (tags for the types JSON lacks)."""
    return json.loads(encode_value(value, key, allow_pickle=allow_pickle))


class _Unencodable(Exception):
    def __init__(self, type_name: str, where: str = "") -> None:
        self.type_name = type_name
        self.where = where


def _to_json(value: Any, allow_pickle: bool) -> Any:
    """A JSON-ready twin of *value* (the value itself when it is plain JSON)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_to_json(item, allow_pickle) for item in value]
    if kind is dict:
        if all(type(k) is str for k in value) and TAG not in value:
            return {k: _to_json(v, allow_pickle) for k, v in value.items()}
        return {
            TAG: "dict",
            "items": [
                [_to_json(k, allow_pickle), _to_json(v, allow_pickle)] for k, v in value.items()
            ],
        }
    if kind is tuple:
        return {TAG: "tuple", "items": [_to_json(item, allow_pickle) for item in value]}
    if kind in (set, frozenset):
        items = [_to_json(item, allow_pickle) for item in value]
        # sorted by text, so an unchanged set always encodes the same way
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return {TAG: kind.__name__, "items": items}
    if kind is dt.datetime:
        zone = getattr(value.tzinfo, "key", None)  # a ZoneInfo: keep the zone, not the offset
        if zone is not None and type(value.tzinfo).__module__ == "zoneinfo":
            return {TAG: "datetime", "v": value.isoformat(), "tz": zone}
        return {TAG: "datetime", "v": value.isoformat()}
    if kind is dt.date:
        return {TAG: "date", "v": value.isoformat()}
    if kind is dt.time:
        return {TAG: "time", "v": value.isoformat()}
    if kind is dt.timedelta:
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind is bytes or kind is bytearray:
        return {TAG: kind.__name__, "v": base64.b64encode(value).decode("ascii")}
    if kind is Decimal:
        return {TAG: "decimal", "v": str(value)}
    if kind is uuid.UUID:
        return {TAG: "uuid", "v": str(value)}
    if kind is complex:
        return {TAG: "complex", "v": [value.real, value.imag]}
    if isinstance(value, PurePath):
        return {TAG: "path", "v": str(value), "cls": _noted(kind)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: _to_json(getattr(value, f.name), allow_pickle)
            for f in dataclasses.fields(value)
        }
        return {TAG: "dataclass", "cls": _noted(kind), "fields": fields}
    if hasattr(value, "model_dump") and hasattr(type(value), "model_validate"):
        return {TAG: "pydantic", "cls": _noted(kind), "data": value.model_dump(mode="json")}
    if isinstance(value, enum.Enum):
        return {TAG: "enum", "cls": _noted(kind), "v": _to_json(value.value, allow_pickle)}
    if allow_pickle:
        import pickle

        return {TAG: "pickle", "v": base64.b64encode(pickle.dumps(value)).decode("ascii")}
    raise _Unencodable(kind.__name__)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# ── decoding ───────────────────────────────────────────────────────────────


def parse_stored(text: str, what: str) -> Any:
    """Stored JSON text, parsed; CheckpointDecodeError naming *what* if it is not JSON
    or is nested too deep to parse (it is untrusted: another program may have written
    it)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CheckpointDecodeError(
            f"{what} is not valid checkpoint JSON ({_short(str(exc))}); it was not written "
            "by PocoFlow, or was altered."
        ) from None


def decode_value(text: str, *, allow_pickle: bool = False, key: str | None = None) -> Any:
    """The value :func:`encode_value` encoded; errors name *key* when given."""
    data = parse_stored(text, _where(key))
    return decode_object(data, allow_pickle=allow_pickle, key=key)


def decode_object(data: Any, *, allow_pickle: bool = False, key: str | None = None) -> Any:
    """Turn already-parsed JSON (tags included) back into Python values; errors
    (:class:`CheckpointDecodeError`) name *key* when given."""
    try:
        return _from_json(data, allow_pickle)
    except _Refused as exc:
        raise CheckpointDecodeError(f"{_where(key)} {exc}") from exc.__cause__
    except RecursionError:
        raise CheckpointDecodeError(
            f"{_where(key)} holds a value nested deeper than Python's recursion limit "
            "(sys.getrecursionlimit()), so it cannot be decoded."
        ) from None


def decode_state(state: Mapping[str, Any], *, allow_pickle: bool = False) -> dict[str, Any]:
    """Decode every value of a parsed checkpoint (key → tagged JSON); errors name the key."""
    return {k: decode_object(v, allow_pickle=allow_pickle, key=k) for k, v in state.items()}


class _Refused(Exception):
    """Why a value cannot be decoded; :func:`decode_object` adds the key."""


def _where(key: str | None) -> str:
    return "Checkpoint" if key is None else f"Checkpoint: store key {key!r}"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_json(data: Any, allow_pickle: bool) -> Any:
    kind = type(data)
    if kind is list:
        return [_from_json(item, allow_pickle) for item in data]
    if kind is not dict:
        return data
    if TAG not in data:
        return {k: _from_json(v, allow_pickle) for k, v in data.items()}
    tag = data[TAG]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        if tag == "pickle":
            return _unpickle(data, allow_pickle)
        raise _Refused(
            f"holds an unknown value tag {_short(repr(tag))}; it was written by a "
            "newer PocoFlow, or not by PocoFlow."
        )
    try:
        return decoder(data, allow_pickle)
    except (_Refused, RecursionError, MemoryError):
        raise
    except Exception as exc:  # malformed fields: never a bare KeyError or TypeError
        raise _Refused(
            f"holds a malformed {tag!r} value ({type(exc).__name__}: {_short(str(exc))})."
        ) from None


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if type(value) is not kind:
        raise _Refused(
            f"holds a malformed {data[TAG]!r} value: its {name!r} should be "
            f"{_article(kind.__name__)} {kind.__name__}, not "
            f"{_short(repr(value), 60)}."
        )
    return value


def _items(data: dict[str, Any], allow_pickle: bool) -> list[Any]:
    return [_from_json(item, allow_pickle) for item in _field(data, "items", list)]


_IDENTIFIERS = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")


def _allowed(
    data: dict[str, Any], tag: str, what: str, default: str | None = None
) -> tuple[Any, str]:
    """The allowed class a tagged value names, and that name; the class is checked to be
    of the kind its tag claims. Found in the allow-list only: nothing is imported or run.
    """
    name = data.get("cls", default)
    if type(name) is not str:
        raise _Refused(f"holds {_article(what)} {what} without a class name ('cls').")
    cls = _ALLOWED.get(name)
    if cls is None:
        raise _Refused(
            f"holds {_article(what)} {what} of type {_short(repr(name))}, which is not an "
            "allowed type, so it was not loaded (nothing was imported or run). Checkpoints "
            "may name only PocoFlow's own types, types registered with "
            "pocoflow.register_type, and types this process has encoded. If it is your own "
            f"type and you trust this database, register it before loading: "
            f"{_register_hint(name)}."
        )
    if not _KINDS[tag](cls):
        raise _Refused(
            f"names {_short(repr(name))} as {_article(what)} {what}, but that allowed class "
            "is not one, so it was not called (the class changed kind since the checkpoint "
            "was written, or the row was not written by PocoFlow)."
        )
    return cls, name


def _register_hint(name: str) -> str:
    module, _, qualname = name.partition(":")
    if not (_IDENTIFIERS.fullmatch(module) and _IDENTIFIERS.fullmatch(qualname)):
        return "pocoflow.register_type(TheClass), with the class the checkpoint names"
    if module == "__main__":
        return f"pocoflow.register_type({qualname}) in the script that defines it"
    return f"from {module} import {qualname.split('.')[0]}; pocoflow.register_type({qualname})"


def _built(name: str, make: Callable[[], Any]) -> Any:
    """Call an allowed class; its own errors become a refusal that keeps them as cause."""
    try:
        return make()
    except Exception as exc:
        raise _Refused(
            f"holds a value of {name!r} that its class refused to rebuild "
            f"({type(exc).__name__}: {_short(str(exc))})."
        ) from exc


def _dataclass(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls, name = _allowed(data, "dataclass", "dataclass")
    stored = _field(data, "fields", dict)
    declared = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in stored if k not in declared]
    if unknown:
        raise _Refused(
            f"holds a dataclass {name!r} with fields {_short(repr(unknown))} that the "
            "class does not declare (removed since the checkpoint was written?)."
        )
    fields = {k: _from_json(v, allow_pickle) for k, v in stored.items()}
    init = {k: v for k, v in fields.items() if declared[k].init}
    obj = _built(name, lambda: cls(**init))
    for field_name, value in fields.items():
        if field_name not in init:
            object.__setattr__(obj, field_name, value)
    return obj


def _pydantic(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls, name = _allowed(data, "pydantic", "pydantic model")
    if "data" not in data:
        raise _Refused(f"holds a pydantic model {name!r} without its 'data'.")
    return _built(name, lambda: cls.model_validate(data["data"]))


def _enum(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls, name = _allowed(data, "enum", "enum")
    if "v" not in data:
        raise _Refused(f"holds an enum {name!r} without its value 'v'.")
    value = _from_json(data["v"], allow_pickle)
    return _built(name, lambda: cls(value))


def _path(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls, name = _allowed(data, "path", "path", default="pathlib:Path")
    text = _field(data, "v", str)
    return _built(name, lambda: cls(text))


_ZONE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")  # IANA names: no dots


def _datetime(data: dict[str, Any]) -> dt.datetime:
    value = dt.datetime.fromisoformat(_field(data, "v", str))
    zone = data.get("tz")
    if zone is None:
        return value
    if type(zone) is not str or not _ZONE.fullmatch(zone):
        raise _Refused(
            f"holds a datetime whose time zone {_short(repr(zone), 60)} is not an IANA zone name."
        )
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo(zone))


def _numbers(data: dict[str, Any], count: int, kinds: tuple[type, ...]) -> list[Any]:
    values = _field(data, "v", list)
    if len(values) != count or any(type(v) not in kinds for v in values):
        raise _Refused(
            f"holds a malformed {data[TAG]!r} value: its 'v' should be {count} "
            f"numbers, not {_short(repr(values), 60)}."
        )
    return values


def _unpickle(data: dict[str, Any], allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise _Refused(
            "holds a pickled value; open the database with allow_pickle=True "
            "to load it (only for databases you trust)."
        )
    import pickle

    try:
        return pickle.loads(base64.b64decode(_field(data, "v", str), validate=True))
    except _Refused:
        raise
    except Exception as exc:
        raise _Refused(
            f"holds a pickled value that cannot be unpickled "
            f"({type(exc).__name__}: {_short(str(exc))})."
        ) from exc


def _pairs(data: dict[str, Any]) -> list[list[Any]]:
    pairs = _field(data, "items", list)
    for pair in pairs:
        if type(pair) is not list or len(pair) != 2:
            raise _Refused(
                f"holds a malformed 'dict' value: an item is not a [key, value] "
                f"pair but {_short(repr(pair), 60)}."
            )
    return pairs


def _decimal(data: dict[str, Any]) -> Decimal:
    text = _field(data, "v", str)
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation is not a ValueError
        raise _Refused(
            f"holds a malformed 'decimal' value: {_short(repr(text), 60)} is not a number."
        ) from None


def _b64(data: dict[str, Any]) -> bytes:
    return base64.b64decode(_field(data, "v", str), validate=True)


_DECODERS: dict[str, Callable[[dict[str, Any], bool], Any]] = {
    "dict": lambda d, p: {_from_json(k, p): _from_json(v, p) for k, v in _pairs(d)},
    "tuple": lambda d, p: tuple(_items(d, p)),
    "set": lambda d, p: set(_items(d, p)),
    "frozenset": lambda d, p: frozenset(_items(d, p)),
    "datetime": lambda d, p: _datetime(d),
    "date": lambda d, p: dt.date.fromisoformat(_field(d, "v", str)),
    "time": lambda d, p: dt.time.fromisoformat(_field(d, "v", str)),
    "timedelta": lambda d, p: dt.timedelta(*_numbers(d, 3, (int,))),
    "bytes": lambda d, p: _b64(d),
    "bytearray": lambda d, p: bytearray(_b64(d)),
    "decimal": lambda d, p: _decimal(d),
    "uuid": lambda d, p: uuid.UUID(_field(d, "v", str)),
    "complex": lambda d, p: complex(*_numbers(d, 2, (int, float))),
    "path": _path,
    "enum": _enum,
    "dataclass": _dataclass,
    "pydantic": _pydantic,
}
