"""Stubbing the LLM with unittest.mock, as a 0.2 user's test suite does: patch
UniversalLLMProvider.call, patch pocoflow.utils.call_llm where a node looks it up,
and a MagicMock(spec=UniversalLLMProvider) kept in the store."""

from unittest import mock

from pocoflow import Flow, LLMResponse, Node, Store, UniversalLLMProvider, utils


class Summarise(Node):
    def prep(self, store):
        return store["text"]

    def exec(self, text):
        return utils.call_llm(f"Summarise: {text}")

    def post(self, store, text, summary):
        store["summary"] = summary
        return "title"


class Title(Node):
    max_retries = 2

    def prep(self, store):
        return store["summary"], store["_llm"]

    def exec(self, prep_res):
        summary, llm = prep_res
        response = llm.call(f"Title for: {summary}", model="small")
        if not response.success:
            raise RuntimeError("LLM failed")
        return response.content

    def post(self, store, prep_res, title):
        store["title"] = title
        return "done"


def ok(content):
    return LLMResponse(content=content, success=True, provider="mock", model="small",
                       attempts=1, total_time=0.0)


def build():
    summarise, title = Summarise(), Title()
    summarise.then("title", title)
    return Flow(start=summarise)


def main():
    # 1. patch call_llm where the node looks it up, and a spec'd mock provider
    llm = mock.MagicMock(spec=UniversalLLMProvider)
    llm.call.return_value = ok("Mocked Title")
    with mock.patch("pocoflow.utils.call_llm", return_value="a mocked summary") as fake:
        store = Store(data={"text": "long text", "_llm": llm}, name="mocked")
        build().run(store)
    print("summary:", store["summary"], "| title:", store["title"])
    print("call_llm called with:", fake.call_args)
    print("provider.call called with:", llm.call.call_args)

    # 2. patch the class's call: every provider instance answers from the stub
    replies = iter([ok("from the patched class"), LLMResponse(
        content="", success=False, provider="all_failed", model="small", attempts=3,
        total_time=0.0, error_history=[{"error": "boom"}]), ok("second title")])
    with mock.patch.object(UniversalLLMProvider, "call", autospec=True,
                           side_effect=lambda self, prompt=None, model=None, **kw: next(replies)):
        provider = UniversalLLMProvider(primary_provider="openai", fallback_providers=[])
        direct = provider.call("hi")
        print("direct:", direct.content, direct.success)
        with mock.patch("pocoflow.utils.call_llm", return_value="summary two"):
            store2 = Store(data={"text": "other", "_llm": provider}, name="mocked")
            build().run(store2)
    print("title after one failed response and a retry:", store2["title"])

    # 3. a spec'd mock refuses methods 0.2's provider never had
    try:
        llm.stream_tokens("x")
    except AttributeError:
        print("spec'd mock: no stream_tokens")
    print("spec'd mock has get_provider_stats:", hasattr(llm, "get_provider_stats"))


if __name__ == "__main__":
    main()
