"""Describe the public surface of whichever pocoflow is importable, as JSON.

Run by ``record_expected.py`` under a pocoflow 0.2.1 interpreter to write
``expected/api-0.2.1.json``; ``test_api_surface.py`` compares this build with it.
For every module path 0.2.1 had: each public name it defines (for ``pocoflow``,
its ``__all__``), with the parameters of functions and of classes' public
methods (plus ``__init__`` and ``_run``, which 0.2 programs override), and the
value of plain constants.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any

MODULES = ["pocoflow", "pocoflow.store", "pocoflow.node", "pocoflow.flow", "pocoflow.db",
           "pocoflow.runner", "pocoflow.utils", "pocoflow.logging", "pocoflow.ui",
           "pocoflow.ui.monitor"]
EXTRA_METHODS = ("__init__", "_run")
NOT_API = {"annotations", "TYPE_CHECKING"}  # `from __future__ import ...`, typing flags


def parameters(fn: Any) -> list[list[Any]] | None:
    """``[name, kind, default]`` for each parameter (default ``None`` when it has
    none, else its repr in a one-item list), or None if there is no signature."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    result = []
    for param in signature.parameters.values():
        default = (None if param.default is inspect.Parameter.empty
                   else [repr(param.default)])
        result.append([param.name, param.kind.name, default])
    return result


def describe_class(cls: type) -> dict[str, Any]:
    methods = {}
    for name in sorted(dir(cls)):
        if name.startswith("_") and name not in EXTRA_METHODS:
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)):
            methods[name] = {"kind": type(attr).__name__, "params": parameters(getattr(cls, name))}
        elif isinstance(attr, property):
            methods[name] = {"kind": "property"}
        elif inspect.isfunction(attr):
            methods[name] = {"kind": "method", "params": parameters(attr)}
    fields = getattr(cls, "__dataclass_fields__", None)
    return {"kind": "class", "methods": methods,
            "fields": list(fields) if fields else None}


def describe_value(value: Any) -> dict[str, Any]:
    if inspect.isclass(value):
        return describe_class(value)
    if callable(value):
        return {"kind": "function", "params": parameters(value)}
    try:
        return {"kind": "value", "value": json.loads(json.dumps(value))}
    except (TypeError, ValueError):
        return {"kind": "value", "type": type(value).__name__}


def public_names(module: Any) -> list[str]:
    if module.__name__ == "pocoflow":
        return sorted(module.__all__)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value) or name in NOT_API:
            continue
        home = getattr(value, "__module__", module.__name__)
        if home == module.__name__ or not (callable(value) or inspect.isclass(value)):
            names.append(name)
    return sorted(names)


def describe(modules: list[str] = MODULES,
             wanted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The surface of *modules*; with *wanted* (a surface recorded before), the names
    it lists, looked up with getattr (re-exports and lazy attributes included)."""
    surface: dict[str, Any] = {}
    for path in modules:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            surface[path] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        names = public_names(module) if wanted is None else list(wanted.get(path, {}))
        surface[path] = {name: describe_value(getattr(module, name))
                         for name in names if hasattr(module, name)}
    return surface


if __name__ == "__main__":
    # with an argument (a recorded surface), describe the names it lists
    recorded = None
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as f:
            recorded = json.load(f)
    json.dump(describe(MODULES, recorded), sys.stdout, indent=1, sort_keys=True)
    print()
