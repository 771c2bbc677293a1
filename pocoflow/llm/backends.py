"""The providers ``UniversalLLMProvider`` can call: one adapter per SDK family.

An adapter knows where its provider's settings live (environment variables),
how to build the SDK's sync and async clients, and how to turn a chat request
into the SDK's call and the SDK's reply into text. It holds no state; the SDK
is imported only when a client is built, so a provider that is never used
needs no package.

============  ===================  ==================  ====================================
provider      SDK (import)         key variable        default model
============  ===================  ==================  ====================================
openai        openai               OPENAI_API_KEY      gpt-4o
anthropic     anthropic            ANTHROPIC_API_KEY   claude-sonnet-4-5-20250929
gemini        google-genai         GEMINI_API_KEY      gemini-2.0-flash
openrouter    openai               OPENROUTER_API_KEY  anthropic/claude-sonnet-4-5-20250929
ollama        openai               (none; OLLAMA_HOST) llama3.2
============  ===================  ==================  ====================================

SDK clients are built with ``max_retries=0`` where the SDK retries by itself
(openai, anthropic): ``UniversalLLMProvider`` is the one retry policy, so every
attempt shows in ``error_history`` and ``Retry-After`` is honoured once.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from pocoflow.llm.errors import LLMConfigurationError, MissingAPIKeyError, MissingSDKError

Messages = list[dict[str, Any]]

OLLAMA_DEFAULT_HOST = "http://localhost:11434"
OPENROUTER_URL = "https://openrouter.ai/api/v1"


class Backend:
    """How to reach one provider. Subclasses fill in the SDK-specific parts."""

    package = ""  # the pip name, for the missing-SDK error
    module = ""  # the import name
    asyncio_only = False  # its async client runs on asyncio only (not on trio)

    def __init__(self, name: str, default_model: str, key_variable: str | None) -> None:
        self.name = name
        self.default_model = default_model
        self.key_variable = key_variable

    def settings(self, *, named: bool) -> dict[str, str]:
        """The client settings read from the environment (raise if one is missing).

        ``named`` says the user chose this provider (as primary or in an explicit
        fallback list), as opposed to it being one of the default fallbacks.
        """
        assert self.key_variable is not None
        key = os.environ.get(self.key_variable, "")
        if not key:
            raise MissingAPIKeyError(self.name, self.key_variable)
        return {"api_key": key}

    def sdk(self) -> Any:
        """Import the SDK, or raise ``MissingSDKError`` naming the extra to install."""
        try:
            return importlib.import_module(self.module)
        except ImportError:
            raise MissingSDKError(self.name, self.package)

    def client(self, settings: dict[str, str], *, asynchronous: bool) -> Any:
        """A new SDK client (the async flavour when ``asynchronous``)."""
        raise NotImplementedError

    def endpoint(self, client: Any, *, asynchronous: bool) -> Any:
        """The client method that sends one chat request."""
        raise NotImplementedError

    def request(self, model: str, messages: Messages, options: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``endpoint`` for this chat request."""
        raise NotImplementedError

    def reply_text(self, reply: Any) -> str:
        """The text of the SDK's reply object."""
        raise NotImplementedError

    def complete(self, client: Any, model: str, messages: Messages, options: dict[str, Any]) -> str:
        """Send the request with a sync client and return the reply text."""
        send = self.endpoint(client, asynchronous=False)
        return self.reply_text(send(**self.request(model, messages, options)))

    async def acomplete(
        self, client: Any, model: str, messages: Messages, options: dict[str, Any]
    ) -> str:
        """Send the request with an async client and return the reply text.

        A client whose method returns a plain value (a sync test double) works too.
        """
        reply = self.endpoint(client, asynchronous=True)(**self.request(model, messages, options))
        if inspect.isawaitable(reply):
            reply = await reply
        return self.reply_text(reply)


class OpenAIChat(Backend):
    """OpenAI's chat completions API, also spoken by OpenRouter and Ollama."""

    package = module = "openai"

    def __init__(
        self, name: str, default_model: str, key_variable: str | None, base_url: str | None = None
    ) -> None:
        super().__init__(name, default_model, key_variable)
        self.base_url = base_url

    def settings(self, *, named: bool) -> dict[str, str]:
        settings = super().settings(named=named)
        if self.base_url:
            settings["base_url"] = self.base_url
        return settings

    def client(self, settings: dict[str, str], *, asynchronous: bool) -> Any:
        sdk = self.sdk()
        factory = sdk.AsyncOpenAI if asynchronous else sdk.OpenAI
        return factory(**settings, max_retries=0)

    def endpoint(self, client: Any, *, asynchronous: bool) -> Any:
        return client.chat.completions.create

    def request(self, model: str, messages: Messages, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "model": model, "messages": messages}

    def reply_text(self, reply: Any) -> str:
        return reply.choices[0].message.content or ""


class Ollama(OpenAIChat):
    """A local Ollama server through its OpenAI-compatible endpoint (no API key).

    As one of the *default* fallbacks it is used only when ``OLLAMA_HOST`` is set,
    so that a machine with nothing configured gets a clear error instead of
    retries against a server that is not there.
    """

    def settings(self, *, named: bool) -> dict[str, str]:
        host = os.environ.get("OLLAMA_HOST", "")
        if not host and not named:
            raise LLMConfigurationError(
                "The 'ollama' LLM provider is a default fallback and is used only when "
                "OLLAMA_HOST is set. Set OLLAMA_HOST (e.g. http://localhost:11434), or name "
                "'ollama' as the primary provider or in fallback_providers."
            )
        return {"api_key": "ollama", "base_url": f"{(host or OLLAMA_DEFAULT_HOST).rstrip('/')}/v1"}


class AnthropicMessages(Backend):
    """Anthropic's messages API: system messages go to ``system``, max_tokens defaults to 1024."""

    package = module = "anthropic"

    def client(self, settings: dict[str, str], *, asynchronous: bool) -> Any:
        sdk = self.sdk()
        factory = sdk.AsyncAnthropic if asynchronous else sdk.Anthropic
        return factory(**settings, max_retries=0)

    def endpoint(self, client: Any, *, asynchronous: bool) -> Any:
        return client.messages.create

    def request(self, model: str, messages: Messages, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        system = [m["content"] for m in messages if m.get("role") == "system"]
        if "system" in options:
            system.insert(0, options.pop("system"))
        request = {
            "max_tokens": options.pop("max_tokens", 1024),
            **options,
            "model": model,
            "messages": [m for m in messages if m.get("role") != "system"],
        }
        if system:
            request["system"] = _join_text(system)
        return request

    def reply_text(self, reply: Any) -> str:
        return "".join(
            getattr(block, "text", "")
            for block in reply.content
            if getattr(block, "type", "text") == "text"
        )


# generation options with another name in Gemini's GenerateContentConfig
_GEMINI_OPTION_NAMES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}


class GeminiGenerate(Backend):
    """Google's google-genai ``models.generate_content``.

    Roles map to Gemini's (``assistant`` → ``model``), system messages become the
    ``system_instruction``, and options such as ``temperature`` or ``max_tokens``
    go into ``config`` (merged with a ``config=`` you pass yourself). Its async
    client (``client.aio``) is built on asyncio, so under trio ``acall`` sends
    with the sync client in a worker thread.
    """

    package = "google-genai"
    module = "google.genai"
    asyncio_only = True

    def client(self, settings: dict[str, str], *, asynchronous: bool) -> Any:
        return self.sdk().Client(**settings)

    def endpoint(self, client: Any, *, asynchronous: bool) -> Any:
        return (client.aio if asynchronous else client).models.generate_content

    def request(self, model: str, messages: Messages, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options)
        config = options.pop("config", None) or {}
        if not isinstance(config, Mapping):  # a GenerateContentConfig object
            config = config.model_dump(exclude_none=True)
        config = {**config, **{_GEMINI_OPTION_NAMES.get(k, k): v for k, v in options.items()}}
        system = [m["content"] for m in messages if m.get("role") == "system"]
        if system and "system_instruction" not in config:
            config["system_instruction"] = _join_text(system)
        contents = [
            {
                "role": "model" if m.get("role") == "assistant" else "user",
                "parts": [{"text": m["content"]}]
                if isinstance(m["content"], str)
                else m["content"],
            }
            for m in messages
            if m.get("role") != "system"
        ]
        request: dict[str, Any] = {"model": model, "contents": contents}
        if config:
            request["config"] = config
        return request

    def reply_text(self, reply: Any) -> str:
        return reply.text or ""


def _join_text(parts: list[Any]) -> Any:
    """Several system texts joined by blank lines; a single non-text value as it is."""
    if len(parts) == 1:
        return parts[0]
    return "\n\n".join(str(part) for part in parts)


BACKENDS: dict[str, Backend] = {
    "openai": OpenAIChat("openai", "gpt-4o", "OPENAI_API_KEY"),
    "anthropic": AnthropicMessages("anthropic", "claude-sonnet-4-5-20250929", "ANTHROPIC_API_KEY"),
    "gemini": GeminiGenerate("gemini", "gemini-2.0-flash", "GEMINI_API_KEY"),
    "openrouter": OpenAIChat(
        "openrouter",
        "anthropic/claude-sonnet-4-5-20250929",
        "OPENROUTER_API_KEY",
        base_url=OPENROUTER_URL,
    ),
    "ollama": Ollama("ollama", "llama3.2", None),
}


def backend_for(provider: str) -> Backend:
    """The adapter of ``provider``, or ``LLMConfigurationError`` listing the known ones."""
    backend = BACKENDS.get(provider)
    if backend is None:
        raise LLMConfigurationError(
            f"Unknown LLM provider {provider!r}; the known providers are {', '.join(BACKENDS)}."
        )
    return backend


def default_model(provider: str) -> str:
    """``LLM_MODEL_<PROVIDER>``, else ``LLM_MODEL``, else the provider's built-in default."""
    configured = os.environ.get(f"LLM_MODEL_{provider.upper()}") or os.environ.get("LLM_MODEL")
    if configured:
        return configured
    backend = BACKENDS.get(provider)
    return backend.default_model if backend else "unknown"


def redact(text: str) -> str:
    """``text`` with every configured API key replaced by ``***``."""
    for backend in BACKENDS.values():
        key = os.environ.get(backend.key_variable or "", "")
        if len(key) >= 8 and key in text:
            text = text.replace(key, "***")
    return text
