"""The 0.2 README's quick start, grown a little: two nodes, a typed Store with an
observer, and the four hooks printing a live trace."""

from pocoflow import Flow, Node, Store

DOCUMENTS = {
    "intro.txt": "PocoFlow runs LLM pipelines. Nodes share a typed store. Hooks report progress.",
}


def fake_summarise(text):
    """Stands in for the LLM: the first sentence, upper-cased."""
    return text.split(". ")[0].upper() + "."


class LoadDocument(Node):
    def prep(self, store):
        return store["path"]

    def exec(self, path):
        return DOCUMENTS[path]

    def post(self, store, prep, text):
        store["document"] = text
        return "summarise"


class SummariseNode(Node):
    max_retries = 2
    retry_delay = 0.01

    def prep(self, store):
        return store["document"]

    def exec(self, text):
        return fake_summarise(text)

    def post(self, store, prep, summary):
        store["summary"] = summary
        return "done"


def main():
    store = Store(
        data={"path": "intro.txt", "document": "", "summary": ""},
        schema={"path": str, "document": str, "summary": str},
        name="summarise",
    )
    store.add_observer(lambda key, old, new: print(f"  write {key}: {old!r} -> {new!r}"))

    load = LoadDocument()
    summarise = SummariseNode()
    chained = load.then("summarise", summarise)
    print("then() returns the node:", chained is load)

    flow = Flow(start=load, flow_name="summarise")
    same = flow.on("node_start", lambda name, store: print(f"> {name}"))
    print("on() returns the flow:", same is flow)
    flow.on("node_end", lambda name, action, elapsed, store:
            print(f"< {name} -> {action}  (elapsed is a float: {isinstance(elapsed, float)})"))
    flow.on("node_error", lambda name, exc, store: print(f"! {name}: {exc}"))
    flow.on("flow_end", lambda steps, store: print(f"Done in {steps} steps"))

    def broken_hook(name, store):
        raise RuntimeError("a broken hook must not break the run")

    flow.on("node_start", broken_hook)

    try:
        flow.on("node_finish", lambda *args: None)
    except ValueError:
        print("unknown hook event -> ValueError")

    result = flow.run(store)
    print("run() returns the store:", result is store)
    print("summary:", store["summary"])
    print(store)
    print("keys:", list(store.keys()))
    print("items:", sorted(store.items()))
    print("'summary' in store:", "summary" in store, "| 'missing' in store:", "missing" in store)
    print("get with default:", store.get("missing", "n/a"))

    store.validate()
    print("store is valid")
    try:
        store["summary"] = 42
    except TypeError as exc:
        print("bad write -> TypeError naming the key:", "summary" in str(exc))
    print("summary unchanged:", store["summary"])

    store.update({"path": "intro.txt", "document": "x"})
    print("after update:", store["document"])
    print("as_dict is live:", store.as_dict() is store.as_dict(), store.as_dict()["document"])
    print("node defaults:", Node.max_retries, Node.retry_delay, SummariseNode.max_retries)
    print("node names:", load.name, summarise.name)
    print("flow fields:", flow.flow_name, flow.max_steps, flow.start is load,
          flow.db_path, flow.checkpoint_dir, flow.run_id)


if __name__ == "__main__":
    main()
