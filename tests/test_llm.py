"""UniversalLLMProvider and the call_llm helpers: retries, backoff, fallback, error history,
stats, configuration errors, and the sync and async drivers of the one retry policy."""

from __future__ import annotations

import logging
import math
import sys
import textwrap
import threading
from typing import Any

import anyio
import pytest

import pocoflow.llm
from pocoflow.llm import (
    LLMCallError,
    LLMConfigurationError,
    LLMResponse,
    MissingAPIKeyError,
    MissingSDKError,
    UniversalLLMProvider,
    acall_llm,
    call_llm,
    get_default_provider,
    get_llm_stats,
    set_default_provider,
)
from tests.llm_fakes import (  # noqa: F401  (clean_llm_environment is an autouse fixture)
    Fakes,
    HTTPError,
    Script,
    clean_llm_environment,
)


def make(fakes: Fakes, primary: str = "openai", fallbacks: list[str] | None = None,
         **options: Any) -> tuple[UniversalLLMProvider, list[float]]:
    """A provider over ``fakes`` whose sleeps are recorded (and take no time)."""
    sleeps: list[float] = []
    provider = UniversalLLMProvider(primary, [] if fallbacks is None else fallbacks,
                                    client_factory=fakes, sleep=sleeps.append, **options)
    return provider, sleeps


# ── requests: prompt, messages, models ──────────────────────────────────────


def test_a_prompt_is_sent_as_one_user_message() -> None:
    """call("hi") sends [{"role": "user", "content": "hi"}] and returns the reply text."""
    fakes = Fakes(openai=Script("hello"))
    provider, _ = make(fakes)

    response = provider.call("hi")

    assert [[{"role": "user", "content": "hi"}]] == fakes.scripts["openai"].messages
    assert ("hello", True, "openai", 1) == (response.content, response.success,
                                            response.provider, response.attempts)
    assert response.error_history is None


def test_messages_are_sent_as_given_and_win_over_the_prompt() -> None:
    """messages=[...] is sent unchanged (system turn included); a prompt beside it is ignored."""
    fakes = Fakes(openai=Script("ok"))
    provider, _ = make(fakes)
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Why?"}]

    provider.call("ignored", messages=conversation, temperature=0)

    assert [conversation] == fakes.scripts["openai"].messages
    assert 0 == fakes.scripts["openai"].requests[0]["temperature"]


def test_a_call_without_prompt_or_messages_is_refused() -> None:
    """call() with neither a prompt nor messages raises ValueError, as in 0.2."""
    provider, _ = make(Fakes(openai=Script()))

    with pytest.raises(ValueError, match="Pass a prompt, or messages="):
        provider.call()


def test_models_come_from_the_call_then_the_provider_variable_then_llm_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """model= names the primary's model; a fallback uses LLM_MODEL_<PROVIDER>, else
    LLM_MODEL, else its built-in default."""
    fakes = Fakes(openai=Script(RuntimeError("down")), anthropic=Script(RuntimeError("down")),
                  gemini=Script(RuntimeError("down")), openrouter=Script("ok"))
    provider, _ = make(fakes, "openai", ["anthropic", "gemini", "openrouter"], max_retries=1)
    monkeypatch.setenv("LLM_MODEL", "everyone-model")
    monkeypatch.setenv("LLM_MODEL_ANTHROPIC", "claude-x")

    response = provider.call("hi", "gpt-4o-mini")

    asked = [fakes.scripts[p].requests[0]["model"] for p in ("openai", "anthropic", "gemini")]
    assert ["gpt-4o-mini", "claude-x", "everyone-model"] == asked
    assert "everyone-model" == response.model


def test_built_in_default_models_are_those_of_pocoflow_02() -> None:
    """Without model= or LLM_MODEL*, each provider is asked for 0.2's default model."""
    names = ["openai", "anthropic", "gemini", "openrouter", "ollama"]
    fakes = Fakes(**{name: Script(RuntimeError("down")) for name in names})
    provider, _ = make(fakes, "openai", names[1:], max_retries=1)

    provider.call("hi")

    assert ["gpt-4o", "claude-sonnet-4-5-20250929", "gemini-2.0-flash",
            "anthropic/claude-sonnet-4-5-20250929", "llama3.2"] == [
        fakes.scripts[name].requests[0]["model"] for name in names]


def test_a_mapping_names_the_model_of_each_provider() -> None:
    """model={"openai": ..., "anthropic": ...} gives each provider its own model."""
    fakes = Fakes(openai=Script(RuntimeError("down")), anthropic=Script("ok"))
    provider, _ = make(fakes, "openai", ["anthropic"], max_retries=1)

    response = provider.call("hi", model={"openai": "gpt-4o-mini", "anthropic": "claude-y"})

    assert "gpt-4o-mini" == fakes.scripts["openai"].requests[0]["model"]
    assert ("anthropic", "claude-y") == (response.provider, response.model)


# ── retries, fallback, error history, attempts ──────────────────────────────


def test_a_retry_that_succeeds_counts_its_attempts_and_keeps_the_errors() -> None:
    """Two failures then an answer: attempts is 3 and error_history lists both failures."""
    fakes = Fakes(openai=Script(TimeoutError("slow"), ConnectionError("reset"), "fine"))
    provider, sleeps = make(fakes)

    response = provider.call("hi")

    assert (True, "fine", 3) == (response.success, response.content, response.attempts)
    assert [("openai", 1, "TimeoutError", "slow"), ("openai", 2, "ConnectionError", "reset")] == [
        (e["provider"], e["attempt"], e["error_type"], e["error"]) for e in response.error_history]
    assert 2 == len(sleeps)


def test_fallbacks_are_tried_in_order_after_the_primary_is_exhausted() -> None:
    """The primary gets max_retries attempts, then each fallback in the order given."""
    order: list[str] = []
    scripts = {name: Script(RuntimeError(f"{name} down")) for name in ("openai", "gemini")}
    scripts["anthropic"] = Script("from anthropic")

    class Recording(Fakes):
        def __call__(self, provider: str, asynchronous: bool) -> Any:
            client = super().__call__(provider, asynchronous)
            order.append(provider)
            return client

    provider, _ = make(Recording(**scripts), "openai", ["gemini", "anthropic"], max_retries=2)

    response = provider.call("hi")

    assert ["openai", "gemini", "anthropic"] == order  # clients are built once each
    assert [2, 2, 1] == [len(scripts[p].requests) for p in ("openai", "gemini", "anthropic")]
    assert ("anthropic", "from anthropic", 1) == (response.provider, response.content,
                                                   response.attempts)
    assert [("openai", 1), ("openai", 2), ("gemini", 1), ("gemini", 2)] == [
        (e["provider"], e["attempt"]) for e in response.error_history]


def test_no_attempt_at_all_is_a_failed_response() -> None:
    """A provider whose max_retries was set to 0 after construction makes no attempt:
    the response fails with attempts 0 instead of raising."""
    provider, _ = make(Fakes(openai=Script("ok")))
    provider.max_retries = 0

    response = provider.call("hi")

    assert (False, 0, []) == (response.success, response.attempts, response.error_history)


def test_when_every_provider_fails_the_response_says_all_failed() -> None:
    """All attempts failing gives success=False, provider "all_failed", empty content and
    attempts equal to the number of entries in error_history (0.2's count)."""
    fakes = Fakes(openai=Script(RuntimeError("a")), anthropic=Script(RuntimeError("b")))
    provider = UniversalLLMProvider(primary_provider="openai", fallback_providers=["anthropic"],
                                    client_factory=fakes, sleep=lambda seconds: None)

    response = provider.call("hi", model="gpt-4o-mini")

    assert (False, "", "all_failed", "gpt-4o-mini") == (
        response.success, response.content, response.provider, response.model)
    assert 6 == response.attempts == len(response.error_history)
    stamps = [e["timestamp"] for e in response.error_history]
    assert sorted(stamps) == stamps
    assert response.total_time >= 0


def test_the_primary_is_not_tried_twice_when_listed_as_a_fallback() -> None:
    """A fallback list that repeats the primary (or a name) tries each provider once."""
    fakes = Fakes(openai=Script(RuntimeError("down")), anthropic=Script(RuntimeError("down")))
    provider, _ = make(fakes, "OpenAI", ["openai", "anthropic", "Anthropic"], max_retries=1)

    response = provider.call("hi")

    assert ["openai", "anthropic"] == [e["provider"] for e in response.error_history]


def test_retries_tell_the_model_about_the_last_errors() -> None:
    """A retry appends a user message naming the previous errors (0.2's self-healing),
    without changing the caller's list; a fallback's first attempt gets the original."""
    fakes = Fakes(openai=Script(ValueError("bad JSON"), ValueError("still bad")),
                  anthropic=Script(KeyError("x"), "ok"))
    provider, _ = make(fakes, "openai", ["anthropic"], max_retries=2)
    conversation = [{"role": "user", "content": "Give JSON."}]

    provider.call(messages=conversation)

    sent = fakes.scripts["openai"].messages + fakes.scripts["anthropic"].messages
    assert [conversation, conversation] == [sent[0], sent[2]]
    assert [{"role": "user", "content": "Give JSON."}] == conversation
    feedback = sent[1][-1]["content"]
    assert "user" == sent[1][-1]["role"]
    assert "1. ValueError: bad JSON" in feedback
    last = sent[3][-1]["content"].splitlines()
    assert ["1. ValueError: bad JSON", "2. ValueError: still bad", "3. KeyError: 'x'"] == last[1:4]


def test_the_feedback_repeats_only_the_three_latest_errors() -> None:
    """After four failures the retry prompt lists the three most recent, oldest first."""
    errors = [RuntimeError(f"e{n}") for n in range(1, 5)]
    fakes = Fakes(openai=Script(*errors, "ok"))
    provider, _ = make(fakes, max_retries=5)

    provider.call("hi")

    lines = fakes.scripts["openai"].messages[4][-1]["content"].splitlines()
    assert ["1. RuntimeError: e2", "2. RuntimeError: e3", "3. RuntimeError: e4"] == lines[1:4]


# ── backoff and Retry-After ─────────────────────────────────────────────────


def test_backoff_doubles_up_to_max_wait_with_10_to_30_percent_jitter() -> None:
    """Sleeps between attempts are initial_wait doubled each time, capped at max_wait,
    each plus 10-30 % jitter; no sleep follows the last attempt or precedes a fallback."""
    fakes = Fakes(openai=Script(RuntimeError("down")), anthropic=Script(RuntimeError("down")))
    provider, sleeps = make(fakes, "openai", ["anthropic"], max_retries=5,
                            initial_wait=1, max_wait=5)

    provider.call("hi")

    bases = [1, 2, 4, 5] * 2
    assert 8 == len(sleeps)
    assert all(1.1 * base <= slept <= 1.3 * base for base, slept in zip(bases, sleeps, strict=True))


def test_a_zero_initial_wait_retries_at_once() -> None:
    """initial_wait=0 means no wait between attempts (0.2 turned 0 into the default)."""
    provider, sleeps = make(Fakes(openai=Script(RuntimeError("down"), "ok")), initial_wait=0)

    provider.call("hi")

    assert [0.0] == sleeps


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "3600"}, 20.0),  # capped by max_wait
    ],
)
def test_retry_after_headers_replace_the_backoff(headers: dict[str, str],
                                                 expected: float) -> None:
    """A 429 whose response carries Retry-After (or retry-after-ms) is retried after
    exactly that wait, capped by max_wait, without jitter."""
    fakes = Fakes(openai=Script(HTTPError("rate limited", 429, headers), "ok"))
    provider, sleeps = make(fakes, max_wait=20)

    provider.call("hi")

    assert [expected] == sleeps


def test_a_retry_after_attribute_is_honoured() -> None:
    """An error with a retry_after attribute (seconds) sets the wait."""
    error = RuntimeError("busy")
    error.retry_after = 4  # type: ignore[attr-defined]
    provider, sleeps = make(Fakes(openai=Script(error, "ok")))

    provider.call("hi")

    assert [4.0] == sleeps


def test_an_unreadable_retry_after_falls_back_to_the_backoff() -> None:
    """A Retry-After that is neither seconds nor a date leaves the computed backoff."""
    fakes = Fakes(openai=Script(HTTPError("busy", 503, {"retry-after": "soon"}), "ok"))
    provider, sleeps = make(fakes, initial_wait=2)

    provider.call("hi")

    assert 2.2 <= sleeps[0] <= 2.6


# ── configuration errors ────────────────────────────────────────────────────


def test_a_missing_key_names_the_variable_and_is_a_value_error() -> None:
    """With one provider and no OPENAI_API_KEY, call raises MissingAPIKeyError (a
    ValueError, as 0.2 raised) naming the variable, without retrying or sleeping."""
    sleeps: list[float] = []
    provider = UniversalLLMProvider("openai", [], sleep=sleeps.append)

    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY is not set") as caught:
        provider.call("hi")

    assert isinstance(caught.value, ValueError)
    assert [] == sleeps
    assert ["openai"] == [e["provider"] for e in caught.value.error_history]


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider whose SDK is not installed raises MissingSDKError (an ImportError) that
    says: pip install 'pocoflow[llm]'."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-123456")
    provider = UniversalLLMProvider("anthropic", [])

    with pytest.raises(MissingSDKError, match=r"pip install 'pocoflow\[llm\]'") as caught:
        provider.call("hi")

    assert isinstance(caught.value, ImportError)
    assert "anthropic package" in str(caught.value)


def test_a_primary_without_key_falls_back_visibly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing key for the primary moves on to the fallback at once: the answer comes
    from the fallback, and error_history's first entry says which variable to set."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-123456")
    fakes = Fakes(anthropic=Script("from anthropic"))

    def factory(provider: str, asynchronous: bool) -> Any:
        if provider == "openai":
            raise MissingAPIKeyError("openai", "OPENAI_API_KEY")
        return fakes(provider, asynchronous)

    sleeps: list[float] = []
    provider = UniversalLLMProvider("openai", ["anthropic"], client_factory=factory,
                                    sleep=sleeps.append)

    response = provider.call("hi")

    assert (True, "anthropic", 1) == (response.success, response.provider, response.attempts)
    [entry] = response.error_history
    assert ("openai", 1, "MissingAPIKeyError") == (entry["provider"], entry["attempt"],
                                                   entry["error_type"])
    assert "OPENAI_API_KEY" in entry["error"]
    assert [] == sleeps
    assert 1 == provider.get_provider_stats()["openai"]["unavailable"]


def test_configuration_errors_are_not_fed_back_to_the_model() -> None:
    """A retry prompt names the errors the model saw, not a fallback's missing key."""
    def factory(provider: str, asynchronous: bool) -> Any:
        if provider == "openai":
            raise MissingAPIKeyError("openai", "OPENAI_API_KEY")
        return fakes(provider, asynchronous)

    fakes = Fakes(anthropic=Script(RuntimeError("overloaded"), "ok"))
    provider = UniversalLLMProvider("openai", ["anthropic"], client_factory=factory,
                                    sleep=lambda seconds: None)

    provider.call("hi")

    feedback = fakes.scripts["anthropic"].messages[1][-1]["content"]
    assert "overloaded" in feedback
    assert "OPENAI_API_KEY" not in feedback


def test_nothing_configured_raises_one_error_naming_every_fix() -> None:
    """With no key, SDK or host set, the default chain raises LLMConfigurationError that
    lists every provider with what to set, instead of returning a failed response."""
    provider = UniversalLLMProvider()

    with pytest.raises(LLMConfigurationError, match="No LLM provider could be used") as caught:
        provider.call("hi")

    message = str(caught.value)
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                     "OPENROUTER_API_KEY", "OLLAMA_HOST"):
        assert variable in message
    assert ["openai", "anthropic", "gemini", "openrouter", "ollama"] == [
        e["provider"] for e in caught.value.error_history]


def test_an_unknown_provider_is_a_configuration_error() -> None:
    """An unknown name in the chain is skipped with an error_history entry listing the
    known providers (0.2 skipped it silently)."""
    fakes = Fakes(openai=Script("ok"))
    provider, _ = make(fakes, "mistral", ["openai"])

    response = provider.call("hi")

    assert "openai" == response.provider
    assert "Unknown LLM provider 'mistral'" in response.error_history[0]["error"]


def test_mixed_failures_return_a_failed_response_not_an_exception() -> None:
    """One provider unconfigured and one failing at runtime: a failed LLMResponse whose
    history holds both, and attempts counts every entry."""
    def factory(provider: str, asynchronous: bool) -> Any:
        if provider == "anthropic":
            raise MissingAPIKeyError("anthropic", "ANTHROPIC_API_KEY")
        return fakes(provider, asynchronous)

    fakes = Fakes(openai=Script(RuntimeError("down")))
    provider = UniversalLLMProvider("openai", ["anthropic"], max_retries=2,
                                    client_factory=factory, sleep=lambda seconds: None)

    response = provider.call("hi")

    assert (False, 3) == (response.success, response.attempts)
    assert ["RuntimeError", "RuntimeError", "MissingAPIKeyError"] == [
        e["error_type"] for e in response.error_history]


# ── settings from the environment ───────────────────────────────────────────


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset arguments read LLM_PROVIDER, LLM_MAX_RETRIES, LLM_INITIAL_WAIT and
    LLM_MAX_WAIT; the default fallbacks are 0.2's."""
    monkeypatch.setenv("LLM_PROVIDER", "gemini")
    monkeypatch.setenv("LLM_MAX_RETRIES", "5")
    monkeypatch.setenv("LLM_INITIAL_WAIT", "0.5")
    monkeypatch.setenv("LLM_MAX_WAIT", "8")

    provider = UniversalLLMProvider()

    assert ("gemini", ["anthropic", "gemini", "openrouter", "ollama"], 5, 0.5, 8.0) == (
        provider.primary_provider, provider.fallback_providers, provider.max_retries,
        provider.initial_wait, provider.max_wait)


def test_defaults_without_environment() -> None:
    """With nothing set: openai first, 3 attempts, 1 s initial wait, 30 s max wait."""
    provider = UniversalLLMProvider()

    assert ("openai", 3, 1.0, 30.0) == (provider.primary_provider, provider.max_retries,
                                        provider.initial_wait, provider.max_wait)


def test_max_retries_zero_means_the_default_as_in_02(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_retries=0 falls back to LLM_MAX_RETRIES (or 3), as pocoflow 0.2's `or` did."""
    monkeypatch.setenv("LLM_MAX_RETRIES", "4")

    assert 4 == UniversalLLMProvider(max_retries=0).max_retries


@pytest.mark.parametrize(("variable", "value"), [("LLM_MAX_RETRIES", "three"),
                                                 ("LLM_MAX_RETRIES", "0"),
                                                 ("LLM_MAX_WAIT", "-1"),
                                                 ("LLM_INITIAL_WAIT", "nan"),
                                                 ("LLM_MAX_WAIT", "inf")])
def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                          value: str) -> None:
    """A variable that is not a usable number is refused with a message naming it."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(LLMConfigurationError, match=variable):
        UniversalLLMProvider()


@pytest.mark.parametrize("waits", [{"initial_wait": math.nan}, {"max_wait": math.inf},
                                   {"initial_wait": -1}])
def test_a_wait_that_is_not_a_finite_number_of_seconds_is_refused(waits: dict[str, float],
                                                                  ) -> None:
    """A NaN or endless wait is refused when the provider is made, naming the waits (a
    NaN used to pass, then fail the first retry with a bare ValueError from sleep)."""
    with pytest.raises(LLMConfigurationError, match="waits of 0 or more"):
        UniversalLLMProvider(**waits)


@pytest.mark.parametrize("names", ["anthropic", 3, [None]])
def test_fallback_providers_must_be_a_list_of_names(names: Any) -> None:
    """One name given as a string would be tried letter by letter ('a', 'n', ...): it is
    refused with a TypeError showing the list to write instead."""
    with pytest.raises(TypeError, match="fallback_providers is a list of provider names") as info:
        UniversalLLMProvider(fallback_providers=names)
    if isinstance(names, str):
        assert "fallback_providers=['anthropic']" in str(info.value)


def test_ollama_is_a_default_fallback_only_with_ollama_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In the default chain Ollama needs OLLAMA_HOST; named by the user it is used with
    the default host."""
    skipped = UniversalLLMProvider("openrouter")
    named = UniversalLLMProvider("ollama", [])
    monkeypatch.setitem(sys.modules, "openai", None)

    with pytest.raises(LLMConfigurationError) as caught:
        skipped.call("hi")
    with pytest.raises(MissingSDKError):  # got past the host check to the SDK import
        named.call("hi")

    assert "OLLAMA_HOST is set" in caught.value.error_history[-1]["error"]


# ── statistics ──────────────────────────────────────────────────────────────


def test_provider_stats_count_successes_failures_and_rates() -> None:
    """provider_stats counts per provider; get_provider_stats adds success_rate and
    lists every known provider, as in 0.2."""
    fakes = Fakes(openai=Script("ok", RuntimeError("down")), anthropic=Script("ok"))
    provider, _ = make(fakes, "openai", ["anthropic"], max_retries=1)

    provider.call("one")
    provider.call("two")
    stats = provider.get_provider_stats()

    assert {"openai", "anthropic", "gemini", "openrouter", "ollama"} <= set(stats)
    assert (1, 1, 0.5) == (stats["openai"]["successes"], stats["openai"]["failures"],
                           stats["openai"]["success_rate"])
    assert (1, 0, 1.0) == (stats["anthropic"]["successes"], stats["anthropic"]["failures"],
                           stats["anthropic"]["success_rate"])
    assert 0.0 == stats["gemini"]["success_rate"]
    assert stats["openai"]["avg_time"] >= 0
    assert provider.provider_stats["openai"]["successes"] == 1


def test_calls_from_many_threads_are_all_counted() -> None:
    """call works from worker threads at once, and the stats miss none of the calls."""
    provider, _ = make(Fakes(openai=Script("ok")))
    threads = [threading.Thread(target=provider.call, args=("hi",)) for _ in range(8)]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 8 == provider.get_provider_stats()["openai"]["successes"]


# ── logging ─────────────────────────────────────────────────────────────────


def test_api_keys_never_reach_the_history_or_the_logs(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An SDK error that quotes the API key is recorded and logged with the key masked."""
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    fakes = Fakes(openai=Script(RuntimeError(f"Incorrect API key provided: {secret}"), "ok"))
    provider, _ = make(fakes)

    with caplog.at_level(logging.INFO, logger="pocoflow.llm"):
        response = provider.call("hi")

    assert "Incorrect API key provided: ***" == response.error_history[0]["error"]
    assert caplog.records
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert secret not in fakes.scripts["openai"].messages[1][-1]["content"]


def test_each_failed_attempt_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A failed attempt logs llm_retry at WARNING on pocoflow.llm; an answer logs llm_call."""
    provider, _ = make(Fakes(openai=Script(RuntimeError("boom"), "ok")))

    with caplog.at_level(logging.INFO, logger="pocoflow.llm"):
        provider.call("hi")

    assert [(logging.WARNING, "llm_retry"), (logging.INFO, "llm_call")] == [
        (r.levelno, r.getMessage().split()[0]) for r in caplog.records]


# ── async ───────────────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_acall_uses_async_clients_and_the_same_policy() -> None:
    """acall retries and falls back like call, through the async clients, and its
    sleeps go through the injected sleep."""
    fakes = Fakes(openai=Script(RuntimeError("down")), anthropic=Script(KeyError("k"), "ok"))
    provider, sleeps = make(fakes, "openai", ["anthropic"], max_retries=2, initial_wait=1)

    response = await provider.acall("hi", "gpt-4o-mini")

    assert ("ok", "anthropic", 2) == (response.content, response.provider, response.attempts)
    assert {("openai", True), ("anthropic", True)} == set(fakes.made)
    assert 3 == len(response.error_history)
    assert 2 == len(sleeps)
    assert "KeyError: 'k'" in fakes.scripts["anthropic"].messages[1][-1]["content"]


@pytest.mark.anyio
async def test_acall_awaits_an_async_sleep() -> None:
    """An injected sleep that returns an awaitable is awaited by acall."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await anyio.sleep(0)

    fakes = Fakes(openai=Script(HTTPError("busy", 429, {"retry-after": "3"}), "ok"))
    provider = UniversalLLMProvider("openai", [], client_factory=fakes, sleep=sleep)

    await provider.acall("hi")

    assert [3.0] == slept


@pytest.mark.anyio
async def test_acall_sleeps_on_the_event_loop_by_default() -> None:
    """Without an injected sleep, acall waits with anyio.sleep (a short wait here)."""
    fakes = Fakes(openai=Script(RuntimeError("down"), "ok"))
    provider = UniversalLLMProvider("openai", [], initial_wait=0.001, client_factory=fakes)

    response = await provider.acall("hi")

    assert (True, 2) == (response.success, response.attempts)


@pytest.mark.anyio
async def test_a_provider_without_async_client_runs_in_a_worker_thread() -> None:
    """When the factory has no async client (None), acall sends with the sync client in
    a worker thread, so the event loop keeps running."""
    fakes = Fakes(sync_only=True, openai=Script("ok"))
    provider, _ = make(fakes)
    loop_thread = threading.current_thread().name

    response = await provider.acall("hi")

    assert "ok" == response.content
    assert [("openai", True), ("openai", False)] == fakes.made
    assert loop_thread != fakes.scripts["openai"].threads[0]


@pytest.mark.anyio
async def test_acall_raises_configuration_errors_like_call() -> None:
    """acall with no key raises MissingAPIKeyError naming the variable."""
    with pytest.raises(MissingAPIKeyError, match="GEMINI_API_KEY"):
        await UniversalLLMProvider("gemini", []).acall("hi")


@pytest.mark.anyio
async def test_concurrent_acalls_share_one_async_client() -> None:
    """Many acalls at once on one loop build the async client once and all succeed."""
    fakes = Fakes(openai=Script("ok"))
    provider, _ = make(fakes)
    replies: list[LLMResponse] = []

    async def one() -> None:
        replies.append(await provider.acall("hi"))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(one)

    assert 10 == sum(reply.success for reply in replies)
    assert [("openai", True)] == fakes.made


def test_async_clients_are_not_shared_between_event_loops() -> None:
    """Each event loop gets its own async client (they bind to the loop); sync clients
    are built once per provider."""
    fakes = Fakes(openai=Script("ok"))
    provider, _ = make(fakes)

    anyio.run(provider.acall, "one")
    anyio.run(provider.acall, "two", backend="trio")
    provider.call("three")
    provider.call("four")

    assert [("openai", True), ("openai", True), ("openai", False)] == fakes.made


@pytest.mark.anyio
async def test_call_works_inside_a_running_event_loop() -> None:
    """The blocking call works when the calling thread runs an event loop (Jupyter)."""
    provider, _ = make(Fakes(openai=Script(RuntimeError("once"), "ok")))

    response = provider.call("hi")

    assert (True, "ok", 2) == (response.success, response.content, response.attempts)


# ── call_llm, acall_llm, get_llm_stats ──────────────────────────────────────


def test_call_llm_returns_the_text_of_the_shared_provider() -> None:
    """call_llm uses the provider set with set_default_provider; get_llm_stats reads it."""
    fakes = Fakes(openai=Script("hello"))
    set_default_provider(make(fakes)[0])

    assert "hello" == call_llm("hi", model="gpt-4o-mini", temperature=0)
    assert 1 == get_llm_stats()["openai"]["successes"]
    assert ("gpt-4o-mini", 0) == (fakes.scripts["openai"].requests[0]["model"],
                                  fakes.scripts["openai"].requests[0]["temperature"])


def test_call_llm_raises_a_runtime_error_naming_each_providers_last_error() -> None:
    """When every provider fails, call_llm raises LLMCallError (a RuntimeError, as in 0.2)
    carrying the response and each provider's last error."""
    fakes = Fakes(openai=Script(RuntimeError("quota")), anthropic=Script(TimeoutError("slow")))
    set_default_provider(make(fakes, "openai", ["anthropic"], max_retries=1)[0])

    with pytest.raises(RuntimeError, match="LLM call failed after 2 attempts") as caught:
        call_llm(messages=[{"role": "user", "content": "hi"}])

    assert isinstance(caught.value, LLMCallError)
    assert "openai: RuntimeError: quota; anthropic: TimeoutError: slow" in str(caught.value)
    assert caught.value.response.provider == "all_failed"


@pytest.mark.anyio
async def test_acall_llm_returns_the_text() -> None:
    """acall_llm is the awaitable call_llm."""
    set_default_provider(make(Fakes(openai=Script("hello")))[0])

    assert "hello" == await acall_llm("hi")


def test_the_shared_provider_is_built_once_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """get_default_provider builds the provider lazily, once, from the environment."""
    monkeypatch.setenv("LLM_PROVIDER", "anthropic")

    first = get_default_provider()

    assert first is get_default_provider()
    assert "anthropic" == first.primary_provider


def test_the_offline_testing_example_of_the_docstring_works() -> None:
    """The fake client shown in pocoflow.llm's docstring answers call_llm and acall_llm."""
    example = pocoflow.llm.__doc__.split("Testing a flow offline")[1].split("::", 1)[1]
    exec(textwrap.dedent(example), {})

    assert "ok" == call_llm("hi")
    assert "ok" == anyio.run(acall_llm, "hi")
