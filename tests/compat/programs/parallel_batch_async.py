"""Parallel batch the 0.2 way: AsyncNode.exec_async with asyncio.gather (and a
Semaphore to cap concurrency), compared with a sequential AsyncNode."""

import asyncio

from pocoflow import AsyncNode, Flow, Node, Store

ARTICLES = {
    "alpha.txt": "Alpha particles are helium nuclei.",
    "beta.txt": "Beta decay emits electrons or positrons.",
    "gamma.txt": "Gamma rays are high-energy photons.",
    "delta.txt": "A delta is a landform at a river mouth.",
}
in_flight = {"now": 0, "peak": 0}


async def fake_async_llm(text):
    """Stands in for an async LLM client: 50 ms of I/O, then a one-line summary."""
    in_flight["now"] += 1
    in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
    await asyncio.sleep(0.05)
    in_flight["now"] -= 1
    return f"{text.split()[0]}: {len(text.split())} words"


class SequentialSummarize(AsyncNode):
    def prep(self, store):
        return sorted(store["articles"].items())

    async def exec_async(self, items):
        return [(name, await fake_async_llm(text)) for name, text in items]

    def post(self, store, items, results):
        store["sequential"] = dict(results)
        return "parallel"


class ParallelSummarize(AsyncNode):
    def prep(self, store):
        return sorted(store["articles"].items())

    async def exec_async(self, items):
        async def one(name, text):
            return name, await fake_async_llm(text)

        return await asyncio.gather(*(one(n, t) for n, t in items))

    def post(self, store, items, results):
        store["parallel"] = dict(results)
        return "bounded"


class BoundedSummarize(AsyncNode):
    limit = 2

    def prep(self, store):
        return sorted(store["articles"].items())

    async def exec_async(self, items):
        semaphore = asyncio.Semaphore(self.limit)

        async def one(name, text):
            async with semaphore:
                return name, await fake_async_llm(text)

        in_flight["peak"] = 0
        results = await asyncio.gather(*(one(n, t) for n, t in items))
        return results, in_flight["peak"]

    def post(self, store, items, exec_res):
        results, peak = exec_res
        store["bounded"] = dict(results)
        store["bounded_peak"] = peak
        return "flaky"


class FlakyAsyncNode(AsyncNode):
    max_retries = 3
    calls = 0

    async def exec_async(self, prep_res):
        FlakyAsyncNode.calls += 1
        await asyncio.sleep(0)
        if FlakyAsyncNode.calls < 3:
            raise ConnectionError("upstream busy")
        return "ok after retries"

    def post(self, store, prep_res, result):
        store["flaky"] = result


class Report(Node):
    def exec(self, prep_res):
        return None


def main():
    store = Store(data={"articles": ARTICLES}, name="parallel_batch")
    timings = {}
    seq, par, bounded, flaky = (SequentialSummarize(), ParallelSummarize(),
                                BoundedSummarize(), FlakyAsyncNode())
    seq.then("parallel", par)
    par.then("bounded", bounded)
    bounded.then("flaky", flaky)
    flow = Flow(start=seq, flow_name="summaries")
    flow.on("node_end", lambda name, action, elapsed, store: timings.__setitem__(name, elapsed))
    flow.run(store)

    print("sequential:", store["sequential"])
    print("parallel:  ", store["parallel"])
    print("same results:", store["sequential"] == store["parallel"] == store["bounded"])
    print("parallel was faster:",
          timings["ParallelSummarize"] < timings["SequentialSummarize"] * 0.7)
    print("bounded concurrency peak:", store["bounded_peak"])
    print("flaky:", store["flaky"], "after", FlakyAsyncNode.calls, "calls")


if __name__ == "__main__":
    main()
