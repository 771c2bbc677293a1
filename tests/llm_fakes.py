"""Fake LLM SDK clients and modules for the tests of pocoflow.llm (no network, no SDKs)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest


class Script:
    """The replies of one fake provider, in order: each is text or an exception to raise.

    The last reply repeats. ``requests`` records the keyword arguments of every send,
    ``threads`` the name of the thread each send ran on.
    """

    def __init__(self, *replies: str | BaseException) -> None:
        self.replies = list(replies) or ["ok"]
        self.requests: list[dict[str, Any]] = []
        self.threads: list[str] = []

    def next_reply(self, request: dict[str, Any]) -> str:
        self.requests.append(request)
        self.threads.append(threading.current_thread().name)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @property
    def messages(self) -> list[Any]:
        """The messages (or Gemini contents) of every send."""
        return [r.get("messages", r.get("contents")) for r in self.requests]


def _shape(provider: str, text: str) -> Any:
    """``text`` wrapped in the reply object of ``provider``'s SDK."""
    if provider == "anthropic":
        return SimpleNamespace(content=[SimpleNamespace(type="text", text=text)])
    if provider == "gemini":
        return SimpleNamespace(text=text)
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))])


def fake_client(provider: str, script: Script, *, asynchronous: bool) -> Any:
    """A client shaped like ``provider``'s SDK client whose sends follow ``script``."""
    if asynchronous:
        async def send(**request: Any) -> Any:
            return _shape(provider, script.next_reply(request))
    else:
        def send(**request: Any) -> Any:
            return _shape(provider, script.next_reply(request))
    if provider == "anthropic":
        return SimpleNamespace(messages=SimpleNamespace(create=send))
    if provider == "gemini":
        models = SimpleNamespace(generate_content=send)
        return SimpleNamespace(models=models, aio=SimpleNamespace(models=models))
    return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=send)))


class Fakes:
    """A ``client_factory`` serving fake clients that follow one ``Script`` per provider.

    ``made`` records each ``(provider, asynchronous)`` the factory was asked for;
    ``sync_only`` makes it answer None for async clients (a provider without one).
    """

    def __init__(self, *, sync_only: bool = False, **scripts: Script) -> None:
        self.scripts = scripts
        self.sync_only = sync_only
        self.made: list[tuple[str, bool]] = []

    def __call__(self, provider: str, asynchronous: bool) -> Any:
        self.made.append((provider, asynchronous))
        if asynchronous and self.sync_only:
            return None
        return fake_client(provider, self.scripts[provider], asynchronous=asynchronous)


class HTTPError(Exception):
    """An SDK-like API error carrying an HTTP response with headers (as openai's do)."""

    def __init__(self, message: str, status_code: int = 429,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = SimpleNamespace(status_code=status_code, headers=headers or {})


def fake_sdk_modules(script_for: dict[str, Script]) -> dict[str, ModuleType]:
    """Stand-ins for the ``openai``, ``anthropic`` and ``google.genai`` modules.

    Their client classes record their constructor arguments in ``built`` (a list on
    each module) and send through the script of the provider they are built for
    (openai's classes serve openai, openrouter and ollama, told apart by base_url).
    """
    def openai_provider(kwargs: dict[str, Any]) -> str:
        url = kwargs.get("base_url") or ""
        return "openrouter" if "openrouter" in url else "ollama" if url else "openai"

    def client_class(module: ModuleType, provider: str | None, asynchronous: bool) -> type:
        class Client:
            def __init__(self, **kwargs: Any) -> None:
                module.built.append((type(self).__name__, kwargs))
                name = provider or openai_provider(kwargs)
                inner = fake_client(name, script_for[name], asynchronous=asynchronous)
                vars(self).update(vars(inner))
        return Client

    openai = ModuleType("openai")
    openai.built = []
    openai.OpenAI = type("OpenAI", (client_class(openai, None, False),), {})
    openai.AsyncOpenAI = type("AsyncOpenAI", (client_class(openai, None, True),), {})
    anthropic = ModuleType("anthropic")
    anthropic.built = []
    anthropic.Anthropic = type("Anthropic", (client_class(anthropic, "anthropic", False),), {})
    anthropic.AsyncAnthropic = type("AsyncAnthropic",
                                    (client_class(anthropic, "anthropic", True),), {})
    genai = ModuleType("google.genai")
    genai.built = []

    class GeminiClient:
        def __init__(self, **kwargs: Any) -> None:
            genai.built.append(("Client", kwargs))
            self.models = fake_client("gemini", script_for["gemini"], asynchronous=False).models
            self.aio = fake_client("gemini", script_for["gemini"], asynchronous=True).aio

    genai.Client = GeminiClient
    google = ModuleType("google")
    google.genai = genai
    return {"openai": openai, "anthropic": anthropic, "google": google, "google.genai": genai}


LLM_VARIABLES = ("LLM_PROVIDER", "LLM_MODEL", "LLM_MAX_RETRIES", "LLM_INITIAL_WAIT",
                 "LLM_MAX_WAIT", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                 "OPENROUTER_API_KEY", "OLLAMA_HOST")


@pytest.fixture(autouse=True)
def clean_llm_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no LLM variable set, no .env loading and no shared provider."""
    from pocoflow.llm import environment, set_default_provider

    for name in list(os.environ):
        if name in LLM_VARIABLES or name.startswith("LLM_MODEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setitem(environment._env_file, "loaded", True)
    set_default_provider(None)
    yield
    set_default_provider(None)
