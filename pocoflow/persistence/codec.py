"""Checkpoint codec: store values to JSON text and back, with no silent loss.

Plain JSON values are written as they are, so a checkpoint of plain data reads
like pocoflow 0.2's. Other types travel as a tagged object
``{"__pf__": tag, ...}``: datetime, date, time, timedelta, bytes, set,
frozenset, tuple, Decimal, UUID, Path, complex, enums, dicts with non-str keys,
dataclasses and pydantic models. A value the codec cannot encode raises
:class:`CheckpointEncodeError` naming the key and its type; pickle is used
only when the database was opened with ``allow_pickle=True``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import importlib
import json
import uuid
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from pocoflow.errors import CheckpointDecodeError, CheckpointEncodeError

TAG = "__pf__"
_PLAIN = (str, int, float, bool, type(None))


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



def encode_value(value: Any, key: str, *, allow_pickle: bool = False) -> str:
    """The JSON text of one store value; errors name *key*."""
    kind = type(value)
    if kind is str or kind is float:
        return dumps(value)
    if kind is int:
        return int.__repr__(value)
    try:
        return dumps(_to_json(value, allow_pickle))
    except _Unencodable as exc:
        raise CheckpointEncodeError(
            f"Checkpoint: store key '{key}' holds {_article(exc.type_name)} {exc.type_name}"
            f"{exc.where}, which "
            "the checkpoint codec cannot encode. Store plain data there (str, numbers, "
            "lists, dicts, datetime, dataclasses, pydantic models...), or declare the key "
            f"transient: Store(..., transient={{'{key}'}})."
        ) from None
    except RecursionError:
        raise CheckpointEncodeError(
            f"Checkpoint: store key '{key}' holds a value nested too deep, or that contains "
            "itself; checkpoints need a tree of plain values."
        ) from None
    except ValueError as exc:  # e.g. a circular reference
        raise CheckpointEncodeError(
            f"Checkpoint: store key '{key}' cannot be encoded: {exc}."
        ) from None


def to_jsonable(value: Any, key: str, *, allow_pickle: bool = False) -> Any:
    """The JSON-ready form of one store value (tags for the types JSON lacks)."""
    return json.loads(encode_value(value, key, allow_pickle=allow_pickle))


def decode_value(text: str, *, allow_pickle: bool = False) -> Any:
    """The value :func:`encode_value` encoded."""
    return _from_json(json.loads(text), allow_pickle)


def decode_object(data: Any, *, allow_pickle: bool = False) -> Any:
    """Turn already-parsed JSON (tags included) back into Python values."""
    return _from_json(data, allow_pickle)


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
        return {TAG: "dict", "items": [[_to_json(k, allow_pickle), _to_json(v, allow_pickle)]
                                       for k, v in value.items()]}
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
        return {TAG: "path", "v": str(value), "cls": _class_path(kind)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _to_json(getattr(value, f.name), allow_pickle)
                  for f in dataclasses.fields(value)}
        return {TAG: "dataclass", "cls": _class_path(kind), "fields": fields}
    if hasattr(value, "model_dump") and hasattr(type(value), "model_validate"):
        return {TAG: "pydantic", "cls": _class_path(kind),
                "data": value.model_dump(mode="json")}
    if isinstance(value, enum.Enum):
        return {TAG: "enum", "cls": _class_path(kind), "v": _to_json(value.value, allow_pickle)}
    if allow_pickle:
        import pickle

        return {TAG: "pickle", "v": base64.b64encode(pickle.dumps(value)).decode("ascii")}
    raise _Unencodable(kind.__name__)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str, what: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise CheckpointDecodeError(
            f"Checkpoint holds a {what} of class '{path}', which cannot be imported here. "
            f"Import the module that defines it before loading the checkpoint."
        ) from None
    if not isinstance(target, type):
        raise CheckpointDecodeError(
            f"Checkpoint names '{path}' as a {what}, but it is not a class.")
    return target


def _from_json(data: Any, allow_pickle: bool) -> Any:
    kind = type(data)
    if kind is list:
        return [_from_json(item, allow_pickle) for item in data]
    if kind is not dict:
        return data
    tag = data.get(TAG)
    if tag is None:
        return {k: _from_json(v, allow_pickle) for k, v in data.items()}
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(data, allow_pickle)
    if tag == "pickle":
        if not allow_pickle:
            raise CheckpointDecodeError(
                "Checkpoint holds a pickled value; open the database with allow_pickle=True "
                "to load it (only for databases you trust)."
            )
        import pickle

        return pickle.loads(base64.b64decode(data["v"]))
    raise CheckpointDecodeError(f"Checkpoint holds an unknown value tag {tag!r}.")


def _items(data: dict[str, Any], allow_pickle: bool) -> list[Any]:
    return [_from_json(item, allow_pickle) for item in data["items"]]


def _dataclass(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls = _load_class(data["cls"], "dataclass")
    if not dataclasses.is_dataclass(cls):
        raise CheckpointDecodeError(f"Checkpoint names '{data['cls']}' as a dataclass; it is not.")
    fields = {k: _from_json(v, allow_pickle) for k, v in data["fields"].items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in fields.items() if k in init})
    for name, value in fields.items():
        if name not in init:
            object.__setattr__(obj, name, value)
    return obj


def _pydantic(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls: Any = _load_class(data["cls"], "pydantic model")
    if not hasattr(cls, "model_validate"):
        raise CheckpointDecodeError(f"Checkpoint names '{data['cls']}' as a pydantic model; "
                                    "it is not.")
    return cls.model_validate(data["data"])


def _datetime(data: dict[str, Any]) -> dt.datetime:
    value = dt.datetime.fromisoformat(data["v"])
    zone = data.get("tz")
    if zone is None:
        return value
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo(zone))


def _enum(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls: Any = _load_class(data["cls"], "enum")
    return cls(_from_json(data["v"], allow_pickle))


def _path(data: dict[str, Any], allow_pickle: bool) -> Any:
    cls = _load_class(data.get("cls", "pathlib:Path"), "path")
    return cls(data["v"])


_DECODERS: dict[str, Any] = {
    "dict": lambda d, p: {_from_json(k, p): _from_json(v, p) for k, v in d["items"]},
    "tuple": lambda d, p: tuple(_items(d, p)),
    "set": lambda d, p: set(_items(d, p)),
    "frozenset": lambda d, p: frozenset(_items(d, p)),
    "datetime": lambda d, p: _datetime(d),
    "date": lambda d, p: dt.date.fromisoformat(d["v"]),
    "time": lambda d, p: dt.time.fromisoformat(d["v"]),
    "timedelta": lambda d, p: dt.timedelta(*d["v"]),
    "bytes": lambda d, p: base64.b64decode(d["v"]),
    "bytearray": lambda d, p: bytearray(base64.b64decode(d["v"])),
    "decimal": lambda d, p: Decimal(d["v"]),
    "uuid": lambda d, p: uuid.UUID(d["v"]),
    "complex": lambda d, p: complex(*d["v"]),
    "path": _path,
    "enum": _enum,
    "dataclass": _dataclass,
    "pydantic": _pydantic,
}
