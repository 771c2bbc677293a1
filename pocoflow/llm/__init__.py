"""LLM calls for PocoFlow nodes: several providers, retries, fallback, sync or async.

::

    from pocoflow.llm import UniversalLLMProvider, call_llm, acall_llm

    text = call_llm("Summarise: ...")                  # shared provider, from the environment
    text = await acall_llm("Summarise: ...")           # in an AsyncNode: the loop keeps running

    llm = UniversalLLMProvider(primary_provider="openai", fallback_providers=["anthropic"])
    reply = llm.call("hi", model="gpt-4o-mini")        # LLMResponse
    reply.success, reply.content, reply.attempts, reply.error_history

Providers: openai, anthropic, gemini, openrouter, ollama. Their SDKs are
imported only when used (``pip install 'pocoflow[llm]'``); settings come from
environment variables, listed in ``UniversalLLMProvider``'s docstring.

Testing a flow offline: give a provider a ``client_factory`` that returns a fake
SDK client, and make it the one ``call_llm`` uses::

    from types import SimpleNamespace as NS
    from pocoflow.llm import UniversalLLMProvider, set_default_provider

    class FakeOpenAI:  # answers every chat request with "ok"
        def __init__(self):
            self.chat = NS(completions=NS(create=self.create))

        def create(self, **request):
            return NS(choices=[NS(message=NS(content="ok"))])

    set_default_provider(UniversalLLMProvider(
        "openai", [], client_factory=lambda provider, asynchronous: FakeOpenAI()))
"""

from pocoflow.llm.errors import (
    LLMCallError,
    LLMConfigurationError,
    LLMError,
    MissingAPIKeyError,
    MissingSDKError,
)
from pocoflow.llm.provider import UniversalLLMProvider
from pocoflow.llm.response import LLMResponse
from pocoflow.llm.shared import (
    acall_llm,
    call_llm,
    get_default_provider,
    get_llm_stats,
    set_default_provider,
)

__all__ = [
    "LLMCallError",
    "LLMConfigurationError",
    "LLMError",
    "LLMResponse",
    "MissingAPIKeyError",
    "MissingSDKError",
    "UniversalLLMProvider",
    "acall_llm",
    "call_llm",
    "get_default_provider",
    "get_llm_stats",
    "set_default_provider",
]
