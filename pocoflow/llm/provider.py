"""``UniversalLLMProvider``: one chat call with retries, backoff and provider fallback.

The policy is written once, as the generator ``_steps``: it yields what to do
next (send the request to a provider, or sleep) and is told how a send went.
``call`` drives it with sync clients and ``time.sleep``; ``acall`` drives the
same generator with the SDKs' async clients and ``anyio.sleep``. Neither driver
decides anything, so the two cannot drift apart, and ``call`` needs no event
loop (it works in a worker thread and inside a running loop alike).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from pocoflow.llm.backends import BACKENDS, Messages, backend_for, default_model, redact
from pocoflow.llm.clients import ClientFactory, ClientPool
from pocoflow.llm.environment import load_env_file, number_setting
from pocoflow.llm.errors import LLMConfigurationError
from pocoflow.llm.response import LLMResponse
from pocoflow.llm.retry import backoff, retry_after, with_feedback
from pocoflow.logging import get_logger, log_event

_log = get_logger("llm")

DEFAULT_FALLBACKS = ("anthropic", "gemini", "openrouter", "ollama")


@dataclass(frozen=True)
class _Send:
    """Step: send ``messages`` to ``provider``; the driver replies with text or the error."""

    provider: str
    model: str
    messages: Messages
    options: dict[str, Any]
    named: bool  # the user chose this provider (not only a default fallback)


@dataclass(frozen=True)
class _Sleep:
    """Step: wait ``seconds`` before the next attempt."""

    seconds: float


class UniversalLLMProvider:
    """A chat client over several LLM providers, with retries and fallback.

    A call tries the primary provider up to ``max_retries`` times, then each
    fallback in order. Between attempts at a provider it waits ``initial_wait``
    seconds, doubled after each retry up to ``max_wait``, plus 10-30 % jitter;
    when the provider's error carries a ``Retry-After`` (HTTP header, in seconds
    or as a date, or ``retry-after-ms``; or a ``retry_after`` attribute) it waits
    that long instead, capped at ``max_wait``. A retry tells the model about the
    last errors (pocoflow 0.2's self-healing prompt). There is no wait between
    providers.

    Configuration errors (no API key, SDK not installed, unknown provider name)
    are not retried: the call records them in ``error_history`` (one entry,
    ``attempt`` 1) and moves on to the next provider at once, so a missing key for
    the primary falls back to a configured fallback, visibly. When no provider of
    the chain can be used at all, the call raises ``LLMConfigurationError``
    naming what to set or install for each (a chain of one provider raises that
    provider's own ``MissingAPIKeyError``, a ``ValueError``, or
    ``MissingSDKError``, an ``ImportError``, as pocoflow 0.2 did). Every other
    error is retried, and a call whose providers all failed returns an
    ``LLMResponse`` with ``success=False``.

    Settings left as None come from the environment (a ``.env`` file in the
    working directory or above is loaded first, once, if python-dotenv is
    installed; variables already set win):

    ====================  ==================================================
    LLM_PROVIDER          primary provider (default ``openai``)
    LLM_MODEL             default model of every provider
    LLM_MODEL_<PROVIDER>  default model of one provider (``LLM_MODEL_OPENAI``)
    LLM_MAX_RETRIES       attempts per provider (default 3)
    LLM_INITIAL_WAIT      first backoff in seconds (default 1)
    LLM_MAX_WAIT          largest backoff in seconds (default 30)
    OPENAI_API_KEY        and ANTHROPIC_API_KEY, GEMINI_API_KEY, OPENROUTER_API_KEY
    OLLAMA_HOST           Ollama's URL (default ``http://localhost:11434``)
    ====================  ==================================================

    The default fallbacks are anthropic, gemini, openrouter and ollama; Ollama,
    which needs no key, is used as a default fallback only when ``OLLAMA_HOST``
    is set. ``max_retries`` of 0 means the default, as in pocoflow 0.2.

    Two keyword-only hooks serve offline tests: ``client_factory(provider,
    asynchronous)`` returns the client to use instead of building the SDK's
    (no key or SDK is then needed; for ``asynchronous=True`` it may return None,
    and the sync client is then used in a worker thread); ``sleep(seconds)``
    replaces ``time.sleep`` and ``anyio.sleep`` (its result is awaited if
    awaitable).

    ``provider_stats`` counts, per provider, the calls it answered
    (``successes``), the calls where all its attempts failed (``failures``),
    the average seconds spent on it in those calls (``avg_time``), and the calls
    that skipped it for a configuration error (``unavailable``).
    """

    def __init__(
        self,
        primary_provider: str | None = None,
        fallback_providers: list[str] | None = None,
        max_retries: int | None = None,
        initial_wait: float | None = None,
        max_wait: float | None = None,
        *,
        client_factory: ClientFactory | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        load_env_file()
        self.primary_provider = primary_provider or os.environ.get("LLM_PROVIDER") or "openai"
        self._default_fallbacks = list(DEFAULT_FALLBACKS)
        self.fallback_providers = (
            self._default_fallbacks
            if fallback_providers is None
            else _provider_names(fallback_providers)
        )
        self.max_retries = int(max_retries or number_setting("LLM_MAX_RETRIES", 3, minimum=1))
        self.initial_wait = float(
            number_setting("LLM_INITIAL_WAIT", 1.0) if initial_wait is None else initial_wait
        )
        self.max_wait = float(
            number_setting("LLM_MAX_WAIT", 30.0) if max_wait is None else max_wait
        )
        waits = (self.initial_wait, self.max_wait)
        if self.max_retries < 1 or not all(0 <= wait < math.inf for wait in waits):
            raise LLMConfigurationError(
                f"UniversalLLMProvider needs max_retries >= 1 and waits of 0 or more (finite) "
                f"seconds, got "
                f"max_retries={self.max_retries}, initial_wait={self.initial_wait}, "
                f"max_wait={self.max_wait}."
            )
        self.client_factory = client_factory
        self.sleep = sleep
        self.provider_stats: dict[str, dict[str, Any]] = {name: _new_stats() for name in BACKENDS}
        self._lock = threading.Lock()  # guards provider_stats
        self._clients = ClientPool()

    # ── public API ──────────────────────────────────────────────────────────

    def call(
        self,
        prompt: str | None = None,
        model: str | Mapping[str, str] | None = None,
        *,
        messages: Messages | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Send a chat request, with retries and fallback; blocks until it is done.

        ``prompt`` becomes one user message; ``messages`` (a list of ``{"role",
        "content"}`` dicts) is sent as given and wins over ``prompt``. ``model``
        names the primary provider's model (fallbacks use their own default), or
        maps provider names to models. Other keyword arguments go to the SDK
        (``temperature=0``, ``max_tokens=200``, ...). Check ``.success`` before
        using ``.content``. In async code use ``await acall(...)``, which does
        not block the event loop.
        """
        with closing(self._steps(prompt, model, messages, kwargs)) as steps:
            outcome: Any = None
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    return done.value
                outcome = self._perform(step)

    async def acall(
        self,
        prompt: str | None = None,
        model: str | Mapping[str, str] | None = None,
        *,
        messages: Messages | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Awaitable version of ``call``, on asyncio or trio; see it for details."""
        with closing(self._steps(prompt, model, messages, kwargs)) as steps:
            outcome: Any = None
            while True:
                try:
                    step = steps.send(outcome)
                except StopIteration as done:
                    return done.value
                outcome = await self._aperform(step)

    def get_provider_stats(self) -> dict[str, Any]:
        """Per-provider counts (see the class docstring) plus ``success_rate``."""
        with self._lock:
            return {
                name: {**stats, "success_rate": _success_rate(stats)}
                for name, stats in self.provider_stats.items()
            }

    # ── the policy, written once ────────────────────────────────────────────

    def _steps(
        self,
        prompt: str | None,
        model: str | Mapping[str, str] | None,
        messages: Messages | None,
        options: dict[str, Any],
    ) -> Generator[_Send | _Sleep, Any, LLMResponse]:
        """Yield the sends and sleeps of one call; return its ``LLMResponse``."""
        if messages is None:
            if prompt is None:
                raise ValueError(
                    "Pass a prompt, or messages=[{'role': 'user', 'content': ...}]; both are None."
                )
            messages = [{"role": "user", "content": prompt}]
        started = time.monotonic()
        history: list[dict[str, Any]] = []  # every failed attempt, oldest first
        feedback: list[dict[str, Any]] = []  # the errors worth telling the model
        unusable: list[LLMConfigurationError] = []
        chain = self._chain()
        for index, (name, named) in enumerate(chain):
            used_model = _model_for(name, model, primary=index == 0)
            provider_started = time.monotonic()
            for attempt in range(1, self.max_retries + 1):
                sent = messages if attempt == 1 else with_feedback(messages, feedback)
                outcome = yield _Send(name, used_model, sent, options, named)
                if not isinstance(outcome, BaseException):
                    self._count(name, "successes", time.monotonic() - provider_started)
                    total = time.monotonic() - started
                    log_event(
                        _log,
                        "llm_call",
                        provider=name,
                        model=used_model,
                        attempts=attempt,
                        seconds=round(total, 3),
                    )
                    return LLMResponse(
                        content=outcome,
                        success=True,
                        provider=name,
                        model=used_model,
                        attempts=attempt,
                        total_time=total,
                        error_history=history or None,
                    )
                history.append(_entry(name, used_model, attempt, outcome))
                if isinstance(outcome, LLMConfigurationError):
                    unusable.append(outcome)
                    self._count(name, "unavailable")
                    log_event(
                        _log,
                        "llm_provider_unavailable",
                        level=logging.WARNING,
                        provider=name,
                        error=history[-1]["error"],
                    )
                    break
                feedback.append(history[-1])
                log_event(
                    _log,
                    "llm_retry",
                    level=logging.WARNING,
                    provider=name,
                    attempt=attempt,
                    max_retries=self.max_retries,
                    error_type=history[-1]["error_type"],
                    error=history[-1]["error"],
                )
                if attempt < self.max_retries:
                    yield _Sleep(self._wait(attempt, outcome))
            else:
                self._count(name, "failures", time.monotonic() - provider_started)
        if history and len(unusable) == len(history):
            raise _nothing_configured(unusable, history)
        log_event(
            _log,
            "llm_failed",
            level=logging.WARNING,
            providers=[name for name, _ in chain],
            attempts=len(history),
        )
        return LLMResponse(
            content="",
            success=False,
            provider="all_failed",
            model=model if isinstance(model, str) and model else "unknown",
            attempts=len(history),
            total_time=time.monotonic() - started,
            error_history=history,
        )

    def _chain(self) -> list[tuple[str, bool]]:
        """The providers to try, in order, each with whether the user named it."""
        names = [self.primary_provider, *self.fallback_providers]
        chain = list(dict.fromkeys(str(name).strip().lower() for name in names))
        chosen = self.fallback_providers is not self._default_fallbacks
        return [(name, index == 0 or chosen) for index, name in enumerate(chain)]

    def _wait(self, retry: int, error: BaseException) -> float:
        """Seconds before retry number ``retry``: the provider's Retry-After, else backoff."""
        hint = retry_after(error)
        if hint is not None:
            return min(hint, self.max_wait)
        return backoff(retry, self.initial_wait, self.max_wait)

    def _count(self, provider: str, outcome: str, seconds: float = 0.0) -> None:
        with self._lock:
            stats = self.provider_stats.setdefault(provider, _new_stats())
            stats[outcome] += 1
            if outcome != "unavailable":
                stats["avg_time"] += (seconds - stats["avg_time"]) / (
                    stats["successes"] + stats["failures"]
                )

    # ── the drivers' hands: clients, sends, sleeps ──────────────────────────

    def _perform(self, step: _Send | _Sleep) -> Any:
        """Do one step with blocking calls; a failed send returns its exception."""
        if isinstance(step, _Sleep):
            (self.sleep or time.sleep)(step.seconds)
            return None
        try:
            return self._send(step)
        except Exception as exc:
            return exc

    async def _aperform(self, step: _Send | _Sleep) -> Any:
        """Do one step without blocking the event loop; a failed send returns its exception."""
        import anyio

        if isinstance(step, _Sleep):
            pause = anyio.sleep(step.seconds) if self.sleep is None else self.sleep(step.seconds)
            if inspect.isawaitable(pause):
                await pause
            return None
        try:
            client = await self._clients.async_client(
                step.provider, named=step.named, factory=self.client_factory
            )
            if client is None:  # no async client here: the sync one, in a worker thread
                return await anyio.to_thread.run_sync(self._send, step)
            return await backend_for(step.provider).acomplete(
                client, step.model, step.messages, step.options
            )
        except Exception as exc:
            return exc

    def _send(self, step: _Send) -> str:
        """Send ``step`` with the provider's sync client and return the reply text."""
        client = self._clients.sync_client(
            step.provider, named=step.named, factory=self.client_factory
        )
        return backend_for(step.provider).complete(client, step.model, step.messages, step.options)

    def __repr__(self) -> str:
        chain = " → ".join(name for name, _ in self._chain())
        return f"<UniversalLLMProvider {chain} max_retries={self.max_retries}>"


def _model_for(provider: str, model: str | Mapping[str, str] | None, *, primary: bool) -> str:
    """The model to ask ``provider`` for: the caller's choice, else its default."""
    if isinstance(model, Mapping):
        return model.get(provider) or default_model(provider)
    return (model if primary and model else None) or default_model(provider)


def _entry(provider: str, model: str, attempt: int, error: BaseException) -> dict[str, Any]:
    """One ``error_history`` entry (API keys in the message are masked)."""
    return {
        "provider": provider,
        "model": model,
        "attempt": attempt,
        "error": redact(str(error) or repr(error)),
        "error_type": type(error).__name__,
        "timestamp": time.time(),
    }


def _nothing_configured(
    errors: list[LLMConfigurationError], history: list[dict[str, Any]]
) -> LLMConfigurationError:
    """The error to raise when no provider of the chain could be used at all."""
    if len(errors) == 1:
        error = errors[0]
    else:
        lines = "\n".join(f"- {entry['provider']}: {entry['error']}" for entry in history)
        error = LLMConfigurationError(f"No LLM provider could be used:\n{lines}")
        error.__cause__ = errors[0]
    error.error_history = history
    return error


def _success_rate(stats: dict[str, Any]) -> float:
    """Successes over calls that reached the provider (0.0 before the first)."""
    return stats["successes"] / max(stats["successes"] + stats["failures"], 1)


def _new_stats() -> dict[str, Any]:
    return {"successes": 0, "failures": 0, "avg_time": 0.0, "unavailable": 0}


def _provider_names(names: Any) -> list[str]:
    """``fallback_providers`` as a list; one name given alone would be read letter by letter."""
    if isinstance(names, str):
        raise TypeError(
            f"fallback_providers is a list of provider names, got the string {names!r}; "
            f"write fallback_providers=[{names!r}]."
        )
    try:
        listed = list(names)
    except TypeError:
        listed = None
    if listed is None or not all(isinstance(name, str) for name in listed):
        raise TypeError(
            f"fallback_providers is a list of provider names such as ['anthropic'], got {names!r}."
        )
    return listed
