"""UniversalLLMProvider offline: fake `openai` and `anthropic` SDK modules stand in
for the real ones, so the provider's own retry, self-healing prompt, fallback and
statistics run for real, and call_llm uses the provider built from the environment."""

import os
import sys
import types
from dataclasses import fields

SENT = []          # (provider, number of messages, last role) of every request
SCRIPTS = {"openai": [], "anthropic": [], "gemini": []}


def _next(provider, messages):
    # Normalised: system messages are not counted. 0.2 sent them to Anthropic inside
    # `messages` (which Anthropic's API rejects); this build passes them as `system=`.
    chat = [m for m in messages if m["role"] != "system"]
    SENT.append((provider, len(chat), chat[-1]["role"]))
    script = SCRIPTS[provider]
    reply = script.pop(0) if len(script) > 1 else script[0]
    if isinstance(reply, Exception):
        raise reply
    return reply


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeOpenAI:
    def __init__(self, api_key=None, base_url=None, **kwargs):
        self.chat = _Obj(completions=_Obj(create=self._create))

    def _create(self, model, messages, **kwargs):
        text = _next("openai", messages)
        return _Obj(choices=[_Obj(message=_Obj(content=text))])


class FakeAnthropic:
    def __init__(self, api_key=None, **kwargs):
        self.messages = _Obj(create=self._create)

    def _create(self, model, messages, max_tokens=1024, **kwargs):
        text = _next("anthropic", messages)
        return _Obj(content=[_Obj(type="text", text=text)])


class FakeGenAIClient:
    def __init__(self, api_key=None, **kwargs):
        self.models = _Obj(generate_content=self._generate)

    def _generate(self, model, contents, **kwargs):
        return _Obj(text=_next("gemini", [{"role": "user", "content": str(contents)}]))


fake_genai = types.SimpleNamespace(Client=FakeGenAIClient)
sys.modules["google"] = types.SimpleNamespace(genai=fake_genai)
sys.modules["google.genai"] = fake_genai
sys.modules["openai"] = types.SimpleNamespace(OpenAI=FakeOpenAI)
sys.modules["anthropic"] = types.SimpleNamespace(Anthropic=FakeAnthropic)
os.environ.update({"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test",
                   "GEMINI_API_KEY": "g-test", "OPENROUTER_API_KEY": "or-test",
                   "OLLAMA_HOST": "http://127.0.0.1:9",
                   "LLM_PROVIDER": "openai", "LLM_MAX_RETRIES": "2",
                   "LLM_INITIAL_WAIT": "0.001", "LLM_MAX_WAIT": "0.002"})
for name in ("LLM_MODEL", "LLM_MODEL_OPENAI", "LLM_MODEL_ANTHROPIC"):
    os.environ.pop(name, None)

from pocoflow import LLMResponse, UniversalLLMProvider, call_llm, get_llm_stats  # noqa: E402


def show(label, response):
    print(f"{label}: success={response.success} provider={response.provider} "
          f"model={response.model} attempts={response.attempts} content={response.content!r}")
    history = response.error_history or []
    if response.success:
        # Normalised: after a fallback, 0.2 kept only the answering provider's errors;
        # this build keeps every provider's (quirk_llm_fallback_history.py prints them).
        history = [e for e in history if e["provider"] == response.provider]
    for entry in history:
        print(f"    error: {entry['provider']} attempt {entry['attempt']} "
              f"{entry['error_type']}: {entry['error']}")


def main():
    print("LLMResponse fields:", [f.name for f in fields(LLMResponse)])
    llm = UniversalLLMProvider(primary_provider="openai", fallback_providers=["anthropic"],
                               max_retries=3, initial_wait=0.001, max_wait=0.002)
    print("settings:", llm.primary_provider, llm.fallback_providers, llm.max_retries,
          llm.initial_wait, llm.max_wait)

    SCRIPTS["openai"] = ["Paris"]
    show("first try", llm.call("Capital of France?"))

    SCRIPTS["openai"] = [RuntimeError("bad gateway"), "Rome"]
    show("second try", llm.call("Capital of Italy?", model="gpt-4o-mini"))

    SCRIPTS["openai"] = [RuntimeError("rate limited")]
    SCRIPTS["anthropic"] = ["Madrid"]
    show("fallback", llm.call(messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Capital of Spain?"}]))

    SCRIPTS["anthropic"] = [RuntimeError("overloaded")]
    show("all failed", llm.call("Capital of Peru?"))

    # what each request carried: retries add one message telling the model the errors
    for provider, count, role in SENT:
        print("  sent:", provider, count, role)
    stats = llm.get_provider_stats()
    # Normalised: this build adds an 'unavailable' count; 0.2's keys are printed.
    for name in ("openai", "anthropic"):
        print(" ", name, {k: stats[name][k] for k in ("successes", "failures", "success_rate")})

    SENT.clear()
    SCRIPTS["openai"] = ["shared provider answer"]
    print("call_llm:", call_llm("hello"))
    print("call_llm with messages:", call_llm(messages=[{"role": "user", "content": "hi"}]))
    print("sent:", SENT)
    print("get_llm_stats openai successes:", get_llm_stats()["openai"]["successes"])
    SCRIPTS["openai"] = [RuntimeError("down")]
    SCRIPTS["gemini"] = [RuntimeError("quota")]
    try:
        call_llm("hello again")
    except RuntimeError as exc:
        print("call_llm raised RuntimeError:",
              str(exc).startswith("LLM call failed after 10 attempts"))


if __name__ == "__main__":
    main()
