"""PocoFlow: LLM workflows as graphs of ``prep | exec | post`` nodes on an async engine.

``from pocoflow import Flow, Node, Store`` stays light: the engine (anyio)
loads on the first run, and the rest of the API on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow.errors import (
    CheckpointDecodeError,
    CheckpointEncodeError,
    DatabaseConnectionError,
    DatabaseFileError,
    DatabaseTimeoutError,
    DatabaseVersionError,
    FlowConfigError,
    MaxStepsExceeded,
    NodeTimeoutError,
    Pause,
    PersistenceError,
    PocoFlowError,
    ResumeError,
    RunExistsError,
    RunFailedError,
    RunNotFoundError,
    RunTakenOverError,
    SchemaError,
    UnmatchedActionError,
    UnmatchedActionWarning,
)
from pocoflow.flow import Flow
from pocoflow.node import AsyncBatchNode, AsyncNode, BatchNode, Node
from pocoflow.store import Store

if TYPE_CHECKING:
    from pocoflow.bridge import RunHandle
    from pocoflow.db import AsyncWorkflowDB, WorkflowDB
    from pocoflow.llm import (
        LLMCallError,
        LLMConfigurationError,
        LLMError,
        LLMResponse,
        UniversalLLMProvider,
        acall_llm,
        call_llm,
        get_llm_stats,
    )
    from pocoflow.persistence.codec import register_type, register_types
    from pocoflow.sinks import Sink
    from pocoflow.visualize import FlowVisualizer, visualize_flow

__version__ = "0.3.0.dev0"

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncWorkflowDB",
    "BatchNode",
    "CheckpointDecodeError",
    "CheckpointEncodeError",
    "DatabaseConnectionError",
    "DatabaseFileError",
    "DatabaseTimeoutError",
    "DatabaseVersionError",
    "Flow",
    "FlowConfigError",
    "FlowVisualizer",
    "LLMCallError",
    "LLMConfigurationError",
    "LLMError",
    "LLMResponse",
    "MaxStepsExceeded",
    "Node",
    "NodeTimeoutError",
    "Pause",
    "PersistenceError",
    "PocoFlowError",
    "ResumeError",
    "RunExistsError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "RunTakenOverError",
    "SchemaError",
    "Sink",
    "Store",
    "UniversalLLMProvider",
    "UnmatchedActionError",
    "UnmatchedActionWarning",
    "WorkflowDB",
    "acall_llm",
    "call_llm",
    "get_llm_stats",
    "register_type",
    "register_types",
    "visualize_flow",
]

# loaded on first access, so `import pocoflow` pulls in neither anyio nor sqlalchemy
_LAZY = {
    "RunHandle": "pocoflow.bridge",
    "WorkflowDB": "pocoflow.db",
    "AsyncWorkflowDB": "pocoflow.db",
    "Sink": "pocoflow.sinks",
    "FlowVisualizer": "pocoflow.visualize",
    "visualize_flow": "pocoflow.visualize",
    "register_type": "pocoflow.persistence.codec",
    "register_types": "pocoflow.persistence.codec",
    **dict.fromkeys(
        (
            "LLMCallError",
            "LLMConfigurationError",
            "LLMError",
            "LLMResponse",
            "UniversalLLMProvider",
            "acall_llm",
            "call_llm",
            "get_llm_stats",
        ),
        "pocoflow.llm",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pocoflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
