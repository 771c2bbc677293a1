"""After a fallback provider answers, the app logs the response's error_history
(0.2: the errors of the provider that answered)."""

import os
import sys
import types


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FailingOpenAI:
    def __init__(self, **kwargs):
        self.chat = _Obj(completions=_Obj(create=self._create))

    def _create(self, **kwargs):
        raise RuntimeError("rate limited")


class WorkingAnthropic:
    def __init__(self, **kwargs):
        self.messages = _Obj(create=lambda **kw: _Obj(content=[_Obj(type="text", text="ok")]))


sys.modules["openai"] = types.SimpleNamespace(OpenAI=FailingOpenAI)
sys.modules["anthropic"] = types.SimpleNamespace(Anthropic=WorkingAnthropic)
os.environ.update({"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"})

from pocoflow import UniversalLLMProvider  # noqa: E402


def main():
    llm = UniversalLLMProvider("openai", ["anthropic"], max_retries=2, initial_wait=0.001,
                               max_wait=0.001)
    response = llm.call("hi")
    print(response.success, response.provider, response.attempts)
    print("retried before answering:", bool(response.error_history))
    for entry in response.error_history or []:
        print("  ", entry["provider"], entry["attempt"], entry["error"])


if __name__ == "__main__":
    main()
