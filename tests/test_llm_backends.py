"""The SDK adapters of pocoflow.llm (against stand-in SDK modules), and the pure pieces
of the retry policy: backoff and Retry-After parsing."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any

import pytest

from pocoflow.llm import MissingSDKError, UniversalLLMProvider
from pocoflow.llm.backends import BACKENDS
from pocoflow.llm.retry import backoff, retry_after
from tests.llm_fakes import (  # noqa: F401  (clean_llm_environment is an autouse fixture)
    HTTPError,
    Script,
    clean_llm_environment,
    fake_sdk_modules,
)

KEYS = {"OPENAI_API_KEY": "sk-openai-0000000001", "ANTHROPIC_API_KEY": "sk-ant-0000000002",
        "GEMINI_API_KEY": "gm-0000000003", "OPENROUTER_API_KEY": "sk-or-0000000004"}


@pytest.fixture
def sdks(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-in openai, anthropic and google.genai modules with every key set; the
    scripts of each provider are under ``sdks["scripts"]``."""
    scripts = {name: Script("ok") for name in BACKENDS}
    modules = fake_sdk_modules(scripts)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for variable, value in KEYS.items():
        monkeypatch.setenv(variable, value)
    return {**modules, "scripts": scripts}


# ── the 0.2 way, through the SDK modules ────────────────────────────────────


def test_pocoflow_02_usage_runs_unchanged(sdks: dict[str, Any]) -> None:
    """0.2's example: UniversalLLMProvider(primary_provider="openai",
    fallback_providers=["anthropic"]).call("hi", model="gpt-4o-mini"), read through
    .success .content .error_history .attempts; a failing openai falls back."""
    sdks["scripts"]["openai"].replies = [RuntimeError("server error")]
    sdks["scripts"]["anthropic"].replies = ["Hello from Claude"]
    llm = UniversalLLMProvider(primary_provider="openai", fallback_providers=["anthropic"],
                               initial_wait=0)

    response = llm.call("hi", model="gpt-4o-mini")

    assert (True, "Hello from Claude", 1) == (response.success, response.content,
                                              response.attempts)
    assert 3 == len(response.error_history)
    assert {"provider", "attempt", "error", "error_type", "timestamp"} <= set(
        response.error_history[0])
    assert "gpt-4o-mini" == sdks["scripts"]["openai"].requests[0]["model"]


def test_sdk_clients_get_the_key_and_no_retries_of_their_own(sdks: dict[str, Any]) -> None:
    """Clients are built with the provider's key (OpenRouter and Ollama with their base
    URLs) and max_retries=0 where the SDK retries by itself."""
    names = ["openai", "anthropic", "gemini", "openrouter", "ollama"]
    for name in names:
        UniversalLLMProvider(name, []).call("hi")

    assert [("OpenAI", {"api_key": KEYS["OPENAI_API_KEY"], "max_retries": 0}),
            ("OpenAI", {"api_key": KEYS["OPENROUTER_API_KEY"], "max_retries": 0,
                        "base_url": "https://openrouter.ai/api/v1"}),
            ("OpenAI", {"api_key": "ollama", "max_retries": 0,
                        "base_url": "http://localhost:11434/v1"})] == sdks["openai"].built
    assert [("Anthropic", {"api_key": KEYS["ANTHROPIC_API_KEY"], "max_retries": 0})] == sdks[
        "anthropic"].built
    assert [("Client", {"api_key": KEYS["GEMINI_API_KEY"]})] == sdks["google.genai"].built
    assert all(len(sdks["scripts"][name].requests) == 1 for name in names)


def test_ollama_host_sets_the_base_url(sdks: dict[str, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """OLLAMA_HOST (with or without a trailing slash) becomes <host>/v1."""
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:11434/")

    UniversalLLMProvider("ollama", []).call("hi")

    assert "http://gpu-box:11434/v1" == sdks["openai"].built[0][1]["base_url"]


def test_clients_are_reused_until_the_key_changes(sdks: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider builds its SDK client once; a changed API key builds a new one."""
    llm = UniversalLLMProvider("openai", [])

    llm.call("one")
    llm.call("two")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-rotated-0005")
    llm.call("three")

    assert [KEYS["OPENAI_API_KEY"], "sk-openai-rotated-0005"] == [
        kwargs["api_key"] for _, kwargs in sdks["openai"].built]


@pytest.mark.anyio
async def test_acall_builds_the_sdks_async_clients(sdks: dict[str, Any]) -> None:
    """acall uses AsyncOpenAI, AsyncAnthropic and genai's client.aio."""
    for name in ("openai", "anthropic", "gemini"):
        response = await UniversalLLMProvider(name, []).acall("hi")
        assert (True, name) == (response.success, response.provider)

    assert ["AsyncOpenAI"] == [cls for cls, _ in sdks["openai"].built]
    assert ["AsyncAnthropic"] == [cls for cls, _ in sdks["anthropic"].built]


def test_a_missing_sdk_in_the_chain_falls_back(sdks: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the google-genai package, gemini is skipped (the history says to pip
    install 'pocoflow[llm]') and the next provider answers."""
    monkeypatch.setitem(sys.modules, "google.genai", None)

    response = UniversalLLMProvider("gemini", ["openai"]).call("hi")

    assert "openai" == response.provider
    [entry] = response.error_history
    assert "MissingSDKError" == entry["error_type"]
    assert "google-genai" in entry["error"]
    assert "pip install 'pocoflow[llm]'" in entry["error"]


def test_the_missing_sdk_error_keeps_the_import_error_type(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MissingSDKError is an ImportError and names the provider and package."""
    monkeypatch.setitem(sys.modules, "openai", None)

    with pytest.raises(ImportError) as caught:
        BACKENDS["openai"].sdk()

    assert isinstance(caught.value, MissingSDKError)
    assert ("openai", "openai") == (caught.value.provider, caught.value.package)


# ── request and reply shapes ────────────────────────────────────────────────

CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Why?"}]


def test_openai_requests_pass_messages_and_options_through() -> None:
    """The OpenAI-compatible request is model, messages and the caller's options."""
    request = BACKENDS["openai"].request("gpt-4o", CONVERSATION, {"temperature": 0})

    assert {"model": "gpt-4o", "messages": CONVERSATION, "temperature": 0} == request


def test_anthropic_requests_move_system_messages_and_default_max_tokens() -> None:
    """System messages go to system=, max_tokens defaults to 1024 (0.2's value)."""
    request = BACKENDS["anthropic"].request("claude", CONVERSATION, {"temperature": 0})

    assert {"model": "claude", "messages": CONVERSATION[1:], "max_tokens": 1024,
            "temperature": 0, "system": "Be brief."} == request


def test_anthropic_requests_merge_a_system_option_and_keep_max_tokens() -> None:
    """A system= option comes before system messages; max_tokens= is kept."""
    request = BACKENDS["anthropic"].request("claude", CONVERSATION,
                                            {"system": "You are terse.", "max_tokens": 50})

    assert ("You are terse.\n\nBe brief.", 50) == (request["system"], request["max_tokens"])


def test_anthropic_replies_join_their_text_blocks() -> None:
    """The reply text joins the text blocks and skips others (thinking, tool use)."""
    reply = SimpleNamespace(content=[SimpleNamespace(type="thinking", thinking="hmm"),
                                     SimpleNamespace(type="text", text="Hello "),
                                     SimpleNamespace(type="text", text="there")])

    assert "Hello there" == BACKENDS["anthropic"].reply_text(reply)


def test_gemini_requests_map_roles_system_and_options_into_config() -> None:
    """Gemini gets user/model turns, the system text as system_instruction, and options
    (max_tokens renamed max_output_tokens) in config, merged with a config= of the caller."""
    request = BACKENDS["gemini"].request("gemini-2.0-flash", CONVERSATION,
                                         {"temperature": 0.2, "max_tokens": 64,
                                          "config": {"top_k": 3}})

    assert {"model": "gemini-2.0-flash",
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]},
                         {"role": "model", "parts": [{"text": "Hello."}]},
                         {"role": "user", "parts": [{"text": "Why?"}]}],
            "config": {"top_k": 3, "temperature": 0.2, "max_output_tokens": 64,
                       "system_instruction": "Be brief."}} == request


def test_gemini_requests_without_options_have_no_config() -> None:
    """A plain prompt sends model and contents only."""
    request = BACKENDS["gemini"].request("g", [{"role": "user", "content": "Hi"}], {})

    assert {"model": "g", "contents": [{"role": "user", "parts": [{"text": "Hi"}]}]} == request


def test_empty_replies_are_empty_strings() -> None:
    """A reply without text (a tool call, a blocked answer) gives "" rather than None."""
    openai_reply = SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=None))])

    assert "" == BACKENDS["openai"].reply_text(openai_reply)
    assert "" == BACKENDS["gemini"].reply_text(SimpleNamespace(text=None))


# ── backoff and Retry-After, as functions ───────────────────────────────────


@pytest.mark.parametrize(("retry", "expected"), [(1, 1.2), (2, 2.4), (3, 4.8), (4, 6.0),
                                                 (9, 6.0)])
def test_backoff_doubles_and_caps_before_adding_jitter(retry: int, expected: float) -> None:
    """backoff(n) = min(initial x 2^(n-1), max_wait) x (1 + jitter), jitter in [0.1, 0.3]."""
    assert expected == pytest.approx(backoff(retry, 1.0, 5.0, uniform=lambda low, high: 0.2))


def test_backoff_draws_its_jitter_between_10_and_30_percent() -> None:
    """The jitter fraction is drawn from uniform(0.1, 0.3), as in pocoflow 0.2."""
    drawn: list[tuple[float, float]] = []

    backoff(1, 2.0, 30.0, uniform=lambda low, high: drawn.append((low, high)) or low)

    assert [(0.1, 0.3)] == drawn


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (HTTPError("x", headers={"retry-after": "12"}), 12.0),
        (HTTPError("x", headers={"RETRY-AFTER": "1.5"}), 1.5),
        (HTTPError("x", headers={"retry-after-ms": "250"}), 0.25),
        (HTTPError("x", headers={"retry-after": formatdate(NOW + 30, usegmt=True)}), 30.0),
        (HTTPError("x", headers={"retry-after": formatdate(NOW - 30, usegmt=True)}), 0.0),
        (HTTPError("x", headers={"retry-after": "-5"}), 0.0),
        (HTTPError("x", headers={"retry-after": "nan"}), None),
        (HTTPError("x", headers={"retry-after": "tomorrow"}), None),
        (HTTPError("x", headers={}), None),
        (SimpleNamespace(retry_after=timedelta(seconds=8)), 8.0),
        (SimpleNamespace(retry_after="3"), 3.0),
        (SimpleNamespace(response=None), None),
        (RuntimeError("plain"), None),
    ],
)
def test_retry_after_reads_headers_dates_and_attributes(error: Any,
                                                        expected: float | None) -> None:
    """retry_after understands seconds, milliseconds, HTTP dates (from now) and a
    retry_after attribute; negative waits become 0; anything unreadable is None."""
    assert expected == retry_after(error, now=NOW)


@pytest.mark.anyio
async def test_gemini_uses_its_async_client_on_asyncio_and_a_thread_on_trio(
        sdks: dict[str, Any], anyio_backend: str) -> None:
    """google-genai's client.aio needs asyncio: on trio the sync client answers from a
    worker thread instead."""
    response = await UniversalLLMProvider("gemini", []).acall("hi")

    on_loop = threading.current_thread().name == sdks["scripts"]["gemini"].threads[0]
    assert (True, anyio_backend == "asyncio") == (response.success, on_loop)
