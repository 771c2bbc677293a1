"""Chat with memory: a self-looping chat node keeps the last turns in the store and
moves older ones to a long-term memory; JSON checkpoints after every node let the
app restart where it stopped (Store.restore + resume_from)."""

import json
import os
import re

from pocoflow import Flow, Node, Store

WINDOW = 4  # messages kept verbatim


def fake_chat_llm(messages, memory):
    """Stands in for the LLM: remembers names and favourite things it was told."""
    last = messages[-1]["content"]
    known = " ".join([m["content"] for m in messages if m["role"] == "user"] + memory)
    if last.endswith("?"):
        for pattern, template in [(r"my name is (\w+)", "Your name is {}."),
                                  (r"i love (\w+)", "You love {}.")]:
            subject = pattern.split()[1]
            if subject in last.lower():
                found = re.findall(pattern, known.lower())
                return template.format(found[-1].capitalize()) if found else "I don't know."
        return "Good question."
    return f"Noted: {last}"


class ChatNode(Node):
    max_retries = 2

    def prep(self, store):
        if not store["pending_inputs"]:
            return None
        user_input = store["pending_inputs"].pop(0)
        print(f"You: {user_input}")
        if user_input == "exit":
            return None
        store["messages"].append({"role": "user", "content": user_input})
        return list(store["messages"]), list(store["memory"])

    def exec(self, prep_result):
        if prep_result is None:
            return None
        messages, memory = prep_result
        return fake_chat_llm(messages, memory)

    def post(self, store, prep_result, reply):
        if reply is None:
            print("Assistant: Goodbye!")
            return "exit"
        print(f"Assistant: {reply}")
        store["messages"].append({"role": "assistant", "content": reply})
        store["turns"] = store["turns"] + 1
        return "compress" if len(store["messages"]) > WINDOW else "continue"


class CompressMemory(Node):
    def prep(self, store):
        return store["messages"][:-WINDOW]

    def exec(self, old_messages):
        return [m["content"] for m in old_messages if m["role"] == "user"]

    def post(self, store, old_messages, facts):
        store["memory"] = store["memory"] + facts
        store["messages"] = store["messages"][-WINDOW:]
        print(f"  (memory now holds {len(store['memory'])} facts)")
        return "continue"


def build_flow():
    chat, compress = ChatNode(), CompressMemory()
    chat.then("continue", chat)
    chat.then("compress", compress)
    compress.then("continue", chat)
    # "exit" has no edge: the flow simply ends there
    return Flow(start=chat, checkpoint_dir="checkpoints", max_steps=50), chat


def main():
    flow, _ = build_flow()
    store = Store(
        data={"messages": [], "memory": [], "turns": 0,
              "pending_inputs": ["Hello!", "My name is Ada", "I love chess",
                                 "Tell me a joke", "exit"]},
        schema={"messages": list, "memory": list, "turns": int},
        name="chat",
    )
    flow.run(store)
    files = sorted(os.listdir("checkpoints"))
    print("checkpoint files:", files)
    with open(os.path.join("checkpoints", files[-1]), encoding="utf-8") as f:
        payload = json.load(f)
    print("snapshot name:", payload["name"], "| keys:", sorted(payload["data"]))
    print("turns so far:", payload["data"]["turns"])

    print("--- the app restarts from the last checkpoint ---")
    restored = Store.restore(os.path.join("checkpoints", files[-1]),
                             schema={"messages": list, "memory": list, "turns": int})
    print("restored:", restored)
    restored["pending_inputs"] = ["What is my name?", "What do I love?", "exit"]
    flow2, chat2 = build_flow()
    flow2.run(restored, resume_from=chat2)
    print("turns:", restored["turns"], "| memory:", restored["memory"])
    print("window:", [m["content"] for m in restored["messages"]])


if __name__ == "__main__":
    main()
