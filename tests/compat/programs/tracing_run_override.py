"""Tracing by overriding Node._run, as the 0.2 cookbook's tracing example does: a
base class opens a span around super()._run(store); a caching node skips the work
entirely by returning an action without calling super()._run."""

import asyncio
import time

from pocoflow import AsyncNode, Flow, Node, Store

SPANS = []


class TracedNode(Node):
    def _run(self, store):
        span = {"node": type(self).__name__, "input_keys": sorted(store.keys())}
        SPANS.append(span)
        start = time.time()
        try:
            action = super()._run(store)
        except Exception as exc:
            span["error"] = f"{type(exc).__name__}: {exc}"
            raise
        span["action"] = action
        span["timed"] = time.time() - start >= 0
        return action


class Greeting(TracedNode):
    def prep(self, store):
        return store.get("name", "World")

    def exec(self, name):
        return f"Hello, {name}!"

    def post(self, store, name, greeting):
        store["greeting"] = greeting
        return "default"


class Uppercase(TracedNode):
    max_retries = 2
    failures = 0

    def prep(self, store):
        return store["greeting"]

    def exec(self, text):
        if Uppercase.failures == 0:
            Uppercase.failures += 1
            raise TimeoutError("first attempt times out")
        return text.upper()

    def post(self, store, text, result):
        store["result"] = result
        return "exclaim"


class TracedAsyncNode(TracedNode, AsyncNode):
    pass


class Exclaim(TracedAsyncNode):
    def prep(self, store):
        return store["result"]

    async def exec_async(self, text):
        await asyncio.sleep(0.01)
        return text + "!!"

    def post(self, store, text, result):
        store["result"] = result
        return "cache"


class CachedLookup(TracedNode):
    """Skips prep/exec/post when the answer is cached."""

    def _run(self, store):
        cached = store.get("cache", {}).get(store["result"])
        if cached is not None:
            SPANS.append({"node": type(self).__name__, "cache": "hit"})
            store["lookup"] = cached
            return "explode"
        return super()._run(store)

    def prep(self, store):
        return store["result"]

    def exec(self, key):
        return len(key)

    def post(self, store, key, value):
        store["lookup"] = value
        return "explode"


class Explode(TracedNode):
    def exec(self, prep_res):
        raise ValueError("tracing sees the error too")


def build():
    greeting, upper, exclaim, lookup, explode = (Greeting(), Uppercase(), Exclaim(),
                                                 CachedLookup(), Explode())
    greeting.then("default", upper)
    upper.then("exclaim", exclaim)
    exclaim.then("cache", lookup)
    lookup.then("explode", explode)
    return Flow(start=greeting, flow_name="traced")


def main():
    print("=== first run (cache miss) ===")
    store = Store(data={"name": "PocoFlow User", "cache": {}}, name="tracing_demo")
    try:
        build().run(store)
    except ValueError as exc:
        print("flow raised:", exc)
    for span in SPANS:
        print(span)
    print("result:", store["result"], "| lookup:", store["lookup"])

    print("=== second run (cache hit) ===")
    SPANS.clear()
    store2 = Store(data={"name": "Ada", "cache": {"HELLO, ADA!!!": "from cache"}},
                   name="tracing_demo")
    try:
        build().run(store2)
    except ValueError as exc:
        print("flow raised:", exc)
    for span in SPANS:
        print(span)
    print("lookup:", store2["lookup"])


if __name__ == "__main__":
    main()
