"""pocoflow 0.2's module of LLM helpers and flow visualization, kept as a path.

The LLM helpers live in ``pocoflow.llm``; ``FlowVisualizer`` and
``visualize_flow`` in ``pocoflow.visualize``, imported on first access. As in
0.2, importing this module loads a ``.env`` file if python-dotenv is installed
(the nearest one from the working directory up; variables already set win).
``import pocoflow`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow.llm import LLMResponse, UniversalLLMProvider, acall_llm, call_llm, get_llm_stats
from pocoflow.llm.environment import load_env_file

if TYPE_CHECKING:
    from pocoflow.visualize import FlowVisualizer, visualize_flow

__all__ = [
    "FlowVisualizer",
    "LLMResponse",
    "UniversalLLMProvider",
    "acall_llm",
    "call_llm",
    "get_llm_stats",
    "visualize_flow",
]

_FROM_VISUALIZE = ("FlowVisualizer", "visualize_flow")

load_env_file()


def __getattr__(name: str) -> Any:
    if name not in _FROM_VISUALIZE:
        raise AttributeError(f"module 'pocoflow.utils' has no attribute {name!r}")
    import importlib

    try:
        visualize = importlib.import_module("pocoflow.visualize")
    except ImportError as exc:
        raise AttributeError(
            f"pocoflow.utils.{name} comes from pocoflow.visualize, which cannot be imported: {exc}"
        ) from exc
    return getattr(visualize, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_VISUALIZE])
