"""The shared provider behind ``call_llm``, ``acall_llm`` and ``get_llm_stats``.

Built on first use from the environment (see ``UniversalLLMProvider``), or set
with ``set_default_provider`` (to choose providers in code, or to put a fake
client behind every ``call_llm`` of a flow under test).
"""

from __future__ import annotations

import threading
from typing import Any

from pocoflow.llm.errors import LLMCallError
from pocoflow.llm.provider import UniversalLLMProvider
from pocoflow.llm.response import LLMResponse

_shared: dict[str, UniversalLLMProvider] = {}
_shared_lock = threading.Lock()


def get_default_provider() -> UniversalLLMProvider:
    """The provider ``call_llm`` uses, built from the environment on first use."""
    with _shared_lock:
        if "provider" not in _shared:
            _shared["provider"] = UniversalLLMProvider()
        return _shared["provider"]


def set_default_provider(provider: UniversalLLMProvider | None) -> None:
    """Make ``call_llm`` use ``provider`` (None: build a new one from the environment)."""
    with _shared_lock:
        _shared.pop("provider", None)
        if provider is not None:
            _shared["provider"] = provider


def call_llm(
    prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any
) -> str:
    """Send a chat request through the shared provider and return the reply text.

    Takes what ``UniversalLLMProvider.call`` takes (``model=``, SDK options).
    Raises ``LLMCallError`` (a ``RuntimeError``, as in pocoflow 0.2) when every
    provider failed, and ``LLMConfigurationError`` when none is configured.
    """
    return _text(get_default_provider().call(prompt, messages=messages, **kwargs))


async def acall_llm(
    prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any
) -> str:
    """Awaitable version of ``call_llm``; see it for details."""
    return _text(await get_default_provider().acall(prompt, messages=messages, **kwargs))


def get_llm_stats() -> dict[str, Any]:
    """The shared provider's ``get_provider_stats()``."""
    return get_default_provider().get_provider_stats()


def _text(response: LLMResponse) -> str:
    """The reply text, or ``LLMCallError`` naming each provider's last error."""
    if response.success:
        return response.content
    last: dict[str, str] = {}
    for entry in response.error_history or []:
        last[entry["provider"]] = f"{entry['error_type']}: {entry['error']}"
    summary = "; ".join(f"{provider}: {error}" for provider, error in last.items())
    raise LLMCallError(
        f"LLM call failed after {response.attempts} attempts. "
        f"Last error of each provider: {summary or 'none recorded'}.",
        response,
    )
