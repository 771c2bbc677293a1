"""PocoFlow: LLM workflows as graphs of ``prep | exec | post`` nodes on an async engine.

``from pocoflow import Flow, Node, Store`` stays light: the engine (anyio)
loads on the first run, and the rest of the API on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow.errors import (
    FlowConfigError,
    MaxStepsExceeded,
    NodeTimeoutError,
    Pause,
    PocoFlowError,
    SchemaError,
    UnmatchedActionWarning,
)
from pocoflow.flow import Flow
from pocoflow.node import AsyncBatchNode, AsyncNode, BatchNode, Node
from pocoflow.store import Store

if TYPE_CHECKING:
    from pocoflow.bridge import RunHandle

__version__ = "0.3.0.dev0"

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "BatchNode",
    "Flow",
    "FlowConfigError",
    "MaxStepsExceeded",
    "Node",
    "NodeTimeoutError",
    "Pause",
    "PocoFlowError",
    "RunHandle",
    "SchemaError",
    "Store",
    "UnmatchedActionWarning",
]

_LAZY = {"RunHandle": "pocoflow.bridge"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pocoflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
