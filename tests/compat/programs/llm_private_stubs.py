"""Offline tests that stub UniversalLLMProvider through the names 0.2's
pocoflow/utils.py defined (it had no public hook for fakes): replace the shared
provider behind call_llm, patch time.sleep where the backoff looks it up, and
patch the client factories and _make_call."""

import os
from unittest import mock

for key in ("OPENAI_API_KEY", "LLM_PROVIDER", "LLM_MODEL", "LLM_MODEL_OPENAI"):
    os.environ.pop(key, None)

import pocoflow.utils  # noqa: E402
from pocoflow import LLMResponse, UniversalLLMProvider, call_llm  # noqa: E402


class FakeProvider(UniversalLLMProvider):
    def call(self, prompt=None, model=None, *, messages=None, **kwargs):
        return LLMResponse(content=f"fake answer to {prompt!r}", success=True,
                           provider="fake", model="fake", attempts=1, total_time=0.0)


def attempt(label, fn):
    try:
        print(f"{label}: {fn()}")
    except Exception as exc:
        print(f"{label}: {type(exc).__name__}")


def shared_provider():
    pocoflow.utils._global_llm = FakeProvider()
    return call_llm("ping")


def flaky_client():
    calls = []

    def create(model, messages, **kwargs):
        calls.append(len(messages))
        if len(calls) == 1:
            raise RuntimeError("flaky")
        return mock.Mock(choices=[mock.Mock(message=mock.Mock(content="pong"))])

    return mock.Mock(chat=mock.Mock(completions=mock.Mock(create=create))), calls


def patched_factory_and_sleep():
    client, calls = flaky_client()
    with mock.patch("pocoflow.utils.time.sleep") as sleep, \
            mock.patch.object(UniversalLLMProvider, "_create_openai_client",
                              return_value=client):
        llm = UniversalLLMProvider(primary_provider="openai", fallback_providers=[])
        response = llm.call("ping")
    return response.content, response.attempts, calls, sleep.call_count


def patched_make_call():
    with mock.patch.object(UniversalLLMProvider, "_make_call", return_value="stubbed"), \
            mock.patch.object(UniversalLLMProvider, "_create_openai_client"):
        llm = UniversalLLMProvider(primary_provider="openai", fallback_providers=[])
        return llm.call("ping").content


def main():
    attempt("call_llm through pocoflow.utils._global_llm", shared_provider)
    attempt("client factory + time.sleep patched", patched_factory_and_sleep)
    attempt("_make_call patched", patched_make_call)
    attempt("default model", lambda: UniversalLLMProvider._default_model("anthropic"))
    attempt("client factories", lambda: sorted(
        UniversalLLMProvider(fallback_providers=[])._client_factories))


if __name__ == "__main__":
    main()
