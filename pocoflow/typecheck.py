"""Turn a Store schema entry (class, tuple of classes, typing form) into a check.

Compiling happens once, when the Store is built, so a form we cannot check at
runtime (a ``TypeVar``, a forward reference, a non-runtime ``Protocol``) is
refused there with a message, never discovered on some later write.
"""

from __future__ import annotations

import collections.abc as cabc
import types
import typing
from collections.abc import Callable
from typing import Any

from pocoflow.errors import SchemaError

Check = Callable[[Any], bool]

_SEQUENCE_ORIGINS: tuple[type, ...] = (
    list,
    set,
    frozenset,
    cabc.Sequence,
    cabc.MutableSequence,
    cabc.Set,
    cabc.MutableSet,
    cabc.Collection,
    cabc.Iterable,
)
_MAPPING_ORIGINS: tuple[type, ...] = (dict, cabc.Mapping, cabc.MutableMapping)


def describe(spec: Any) -> str:
    """A short human name for a schema entry: ``str``, ``int | None``, ``list[str]``."""
    if isinstance(spec, tuple):
        return " | ".join(describe(s) for s in spec)
    if spec is None or spec is type(None):
        return "None"
    if isinstance(spec, type) and not isinstance(spec, types.GenericAlias):
        return spec.__name__
    return repr(spec).replace("typing.", "")


def compile_check(spec: Any, where: str) -> Check:
    """Return a predicate for *spec*; raise :class:`SchemaError` if it cannot be checked.

    *where* names the store and key for the error message.
    """
    try:
        return _compile(spec)
    except _Unsupported as exc:
        raise SchemaError(
            f"{where}: the schema type {describe(spec)} cannot be checked at runtime "
            f"({exc}). Use a class, a tuple of classes, or a typing form such as "
            "int | None, list[str], dict[str, int] or Literal['a', 'b']."
        ) from None


class _Unsupported(Exception):
    pass


def _compile(spec: Any) -> Check:
    if spec is Any or spec is object:
        return _always
    if spec is None or spec is type(None):
        return _is_none
    if isinstance(spec, tuple):
        return _any_of([_compile(s) for s in spec])
    if isinstance(spec, (str, typing.ForwardRef)):
        raise _Unsupported("a string or forward reference is not a type")
    if isinstance(spec, typing.TypeVar):
        raise _Unsupported("a TypeVar has no runtime type")
    if typing.is_typeddict(spec):
        raise _Unsupported("TypedDict cannot be checked with isinstance; use dict")
    supertype = getattr(spec, "__supertype__", None)
    if supertype is not None:  # typing.NewType
        return _compile(supertype)

    origin = typing.get_origin(spec)
    args = typing.get_args(spec)
    if origin is typing.Annotated:
        return _compile(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return _any_of([_compile(a) for a in args])
    if origin is typing.Literal:
        allowed = tuple(args)
        return lambda v: any(v == a and type(v) is type(a) for a in allowed)
    if origin is not None:
        return _compile_generic(spec, origin, args)
    if isinstance(spec, type):
        _require_runtime_checkable(spec)
        return lambda v: isinstance(v, spec)
    raise _Unsupported(f"{type(spec).__name__} is not a type")


def _compile_generic(spec: Any, origin: Any, args: tuple[Any, ...]) -> Check:
    if not isinstance(origin, type):
        raise _Unsupported(f"generic origin {origin!r} is not a class")
    if origin is tuple:
        return _compile_tuple(spec, args)
    if origin is type and args:
        return _compile_class_of(args[0])
    if origin is type or origin is cabc.Callable or not args:
        return lambda v: isinstance(v, origin)
    if issubclass(origin, _MAPPING_ORIGINS) and len(args) == 2:
        key_ok, value_ok = _compile(args[0]), _compile(args[1])
        return lambda v: (
            isinstance(v, origin) and all(key_ok(k) and value_ok(x) for k, x in v.items())
        )
    if issubclass(origin, _SEQUENCE_ORIGINS) and len(args) == 1:
        item_ok = _compile(args[0])
        # items are looked at only in a collection: a one-shot iterator (a generator)
        # would be used up by the check, or never end, so it does not pass
        return lambda v: (
            isinstance(v, origin) and isinstance(v, cabc.Collection) and all(item_ok(x) for x in v)
        )
    raise _Unsupported(f"parameters of {origin.__name__} are not checked")


def _compile_class_of(arg: Any) -> Check:
    """``type[X]``: a class that is X or a subclass of it (``type[A | B]``: of either)."""
    if arg is Any or arg is object:
        return lambda v: isinstance(v, type)
    origin = typing.get_origin(arg)
    if origin is typing.Union or origin is types.UnionType:
        classes = typing.get_args(arg)
    else:
        classes = (arg,)
    if not all(isinstance(c, type) and typing.get_origin(c) is None for c in classes):
        raise _Unsupported(f"type[{arg!r}] is checked only for classes")
    try:
        issubclass(object, classes)  # a Protocol may refuse issubclass
    except TypeError as exc:
        raise _Unsupported(str(exc)) from None
    return lambda v: isinstance(v, type) and issubclass(v, classes)


def _compile_tuple(spec: Any, args: tuple[Any, ...]) -> Check:
    if not args or args == ((),):
        if spec is typing.Tuple:  # noqa: UP006 - bare typing.Tuple: any tuple
            return lambda v: isinstance(v, tuple)
        return lambda v: isinstance(v, tuple) and not v  # tuple[()]
    if len(args) == 2 and args[1] is Ellipsis:
        item_ok = _compile(args[0])
        return lambda v: isinstance(v, tuple) and all(item_ok(x) for x in v)
    checks = [_compile(a) for a in args]
    return lambda v: (
        isinstance(v, tuple)
        and len(v) == len(checks)
        and all(ok(x) for ok, x in zip(checks, v, strict=True))
    )


def _require_runtime_checkable(cls: type) -> None:
    try:
        isinstance(None, cls)
    except TypeError as exc:
        raise _Unsupported(str(exc)) from None


def _any_of(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(ok(v) for ok in checks)


def _always(_value: Any) -> bool:
    return True


def _is_none(value: Any) -> bool:
    return value is None
