"""Minimal two-node flow with hooks: runs offline, no API key needed.

    python examples/hello.py

``fake_llm`` stands in for a real model call so the example runs anywhere;
swap in your client (OpenAI, Anthropic, a local model) in ``exec``.
"""

from __future__ import annotations

import argparse

from pocoflow import Flow, Node, Store


def fake_llm(prompt: str) -> str:
    """An offline stand-in for an LLM call."""
    if prompt.startswith("Summarise"):
        return "PocoFlow runs prep | exec | post nodes over a shared, typed Store."
    return "A SHORT TITLE: " + prompt.split(":", 1)[-1].strip().upper()[:40]


class SummariseNode(Node):
    max_retries = 3       # retry exec up to 3 attempts in all
    retry_delay = 0.5     # seconds between attempts

    def prep(self, store):
        return store["document"]

    def exec(self, text):
        return fake_llm(f"Summarise: {text}")

    def post(self, store, prep, summary):
        store["summary"] = summary
        return "done"


class TitleNode(Node):
    def prep(self, store):
        return store["summary"]

    def exec(self, summary):
        return fake_llm(f"Title for: {summary}")

    def post(self, store, prep, title):
        store["title"] = title
        return None  # "default": no edge, so the flow ends here


def main() -> Store:
    summarise, title = SummariseNode(), TitleNode()
    summarise.then("done", title)

    flow = Flow(start=summarise, flow_name="hello")
    flow.on("node_start", lambda name, store: print(f"▶ {name}"))
    flow.on("node_end", lambda name, action, elapsed, store:
            print(f"✓ {name} → {action}  ({elapsed * 1000:.1f} ms)"))
    flow.on("flow_end", lambda steps, store: print(f"Done in {steps} steps"))

    store = Store(
        data={"document": "PocoFlow is a tiny workflow engine for LLM pipelines.",
              "summary": "", "title": ""},
        schema={"document": str, "summary": str, "title": str},
        name="hello",
    )
    flow.run(store)
    print("summary:", store["summary"])
    print("title:  ", store["title"])
    return store


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
