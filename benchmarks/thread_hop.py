"""PocoFlow thread hop: µs per ``await hop(f)`` of a no-op, by way of going to a thread.

``python benchmarks/thread_hop.py [--quick]`` prints one markdown table. Rows:

- ``anyio.to_thread.run_sync`` (what the engine used before ``run_in_worker``);
- ``pocoflow.threads.run_in_worker`` (dedicated workers), plain and in the engine's
  timeout pattern (``CancelScope(shield=True)`` + ``move_on_after`` +
  ``abandon_on_cancel=True``), next to anyio's hop in the same pattern;
- for reference, a 1-thread ``concurrent.futures`` executor: ``loop.run_in_executor``
  on asyncio; on trio the same executor reporting through ``TrioToken.run_sync_soon``
  (trio has no executor hook), and ``trio.to_thread.run_sync``;
- the engine: µs per step of a threaded sync Node looping on itself with its hop
  (``pocoflow.engine.run_in_worker``, which is ``pocoflow.threads.run_in_worker``)
  and, for comparison, with that seam pointed at anyio's hop, against the no-op steps
  (``threaded = False``, AsyncNode); the target is (threaded step - no-op step)
  ≤ 0.6 x the anyio hop.

Each column is one placement and one backend, all in the same run: every thread
of the process pinned to one CPU (``/proc/self/task``: the pool's workers outlive
an ``anyio.run`` and a thread keeps the affinity it had), or unpinned. Variants take
turns; a cell is the best of the repetitions (``--quick``: fewer). A ratio in
parentheses is to the anyio hop of the same column.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import importlib.metadata
import math
import os
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pocoflow import AsyncNode, Flow, Node, Store, UnmatchedActionWarning, engine
from pocoflow.threads import run_in_worker

HOPS = 2_000
STEPS = 2_000
US = "µs"
Hop = Callable[[Callable[[], None]], Awaitable[Any]]


def noop() -> None:
    """The work of one hop: none."""


# ── hops ─────────────────────────────────────────────────────────────────────


async def anyio_hop(fn: Callable[[], None]) -> Any:
    return await anyio.to_thread.run_sync(fn)


async def worker_hop(fn: Callable[[], None]) -> Any:
    return await run_in_worker(fn)


async def anyio_timeout_hop(fn: Callable[[], None]) -> Any:
    with anyio.CancelScope(shield=True), anyio.move_on_after(60):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def worker_timeout_hop(fn: Callable[[], None]) -> Any:
    with anyio.CancelScope(shield=True), anyio.move_on_after(60):
        return await run_in_worker(fn, abandon_on_cancel=True)


def executor_hops(backend: str, executor: concurrent.futures.Executor) -> dict[str, Hop]:
    if backend == "asyncio":
        import asyncio

        async def in_executor(fn: Callable[[], None]) -> Any:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)

        return {"1-thread executor (`loop.run_in_executor`)": in_executor}

    import outcome
    import trio

    async def trio_executor(fn: Callable[[], None]) -> Any:
        token, task = trio.lowlevel.current_trio_token(), trio.lowlevel.current_task()

        def done(future: concurrent.futures.Future[Any]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.capture(future.result))

        executor.submit(fn).add_done_callback(done)
        return await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED)

    async def trio_to_thread(fn: Callable[[], None]) -> Any:
        return await trio.to_thread.run_sync(fn)

    return {"1-thread executor (`run_sync_soon`)": trio_executor,
            "`trio.to_thread.run_sync`": trio_to_thread}


def per_hop(hop: Hop) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        began = time.perf_counter()
        for _ in range(HOPS):
            await hop(noop)
        return (time.perf_counter() - began) / HOPS * 1e6

    return measure


# ── the engine, projected ────────────────────────────────────────────────────


class Counting:
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["n"] += 1
        return "again" if store["n"] < STEPS else "done"


class AsyncLoop(Counting, AsyncNode):
    async def exec_async(self, prep_res: Any) -> Any:
        return prep_res


class ThreadedLoop(Counting, Node):
    def exec(self, prep_res: Any) -> Any:
        return prep_res


class InlineLoop(ThreadedLoop):
    threaded = False


def per_step(node: Node, hop: Any = None) -> Callable[[], Awaitable[float]]:
    """µs per step of *node* looping on itself; *hop* replaces the engine's hop."""
    node.then("again", node)
    flow = Flow(node, max_steps=100 * STEPS)

    async def measure() -> float:
        store = Store({"n": 0})
        original = engine.run_in_worker
        if hop is not None:
            engine.run_in_worker = hop
        try:
            began = time.perf_counter()
            await flow.run_async(store)
            elapsed = time.perf_counter() - began
        finally:
            engine.run_in_worker = original
        if store["n"] != STEPS:
            raise RuntimeError(f"{store['n']} steps instead of {STEPS}")
        return elapsed / STEPS * 1e6

    return measure


# ── measuring ────────────────────────────────────────────────────────────────


ANYIO = "`anyio.to_thread.run_sync`"
OURS = "`run_in_worker`"
ROWS_STEP = {"step: threaded Node, today (anyio hop)": "step_anyio",
             "step: threaded Node, with `run_in_worker`": "step_ours",
             "step: no-op, `threaded = False`": "step_inline",
             "step: no-op, AsyncNode": "step_async"}


async def column(backend: str, reps: int) -> dict[str, float]:
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        measures = {ANYIO: per_hop(anyio_hop), OURS: per_hop(worker_hop),
                    f"{ANYIO}, timeout pattern": per_hop(anyio_timeout_hop),
                    f"{OURS}, timeout pattern": per_hop(worker_timeout_hop)}
        measures.update({k: per_hop(v) for k, v in executor_hops(backend, executor).items()})
        measures.update({"step_anyio": per_step(ThreadedLoop()),
                         "step_ours": per_step(ThreadedLoop(), run_in_worker),
                         "step_inline": per_step(InlineLoop()),
                         "step_async": per_step(AsyncLoop())})
        best = dict.fromkeys(measures, math.inf)
        for _ in range(reps):
            for name, measure in measures.items():
                gc.collect()
                best[name] = min(best[name], await measure())
    return best


def place(cpus: set[int]) -> None:
    """Give every thread of this process (and so the threads they start) *cpus*."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def table(columns: dict[str, dict[str, float]]) -> str:
    names = list(dict.fromkeys(name for best in columns.values() for name in best))
    hop_rows = [n for n in names if n not in ROWS_STEP.values()]
    cells = [["µs per hop / step", *columns]]
    for name in hop_rows:
        row = [name]
        for best in columns.values():
            if name not in best:
                row.append("—")
                continue
            ratio = "" if name == ANYIO else f" ({best[name] / best[ANYIO]:.2f}x)"
            row.append(f"{best[name]:.1f}{ratio}")
        cells.append(row)
    for label, key in ROWS_STEP.items():
        cells.append([label, *(f"{best[key]:.1f}" for best in columns.values())])
    row = ["threaded step - no-op step, with `run_in_worker`"]
    for best in columns.values():
        noop_step = min(best["step_inline"], best["step_async"])
        extra = best["step_ours"] - noop_step
        row.append(f"{extra:.1f} ({extra / best[ANYIO]:.2f}x)")
    cells.append(row)
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
             for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UnmatchedActionWarning)
    reps = 2 if args.quick else 7
    cpus = os.sched_getaffinity(0)
    placements = {f"pinned to CPU {min(cpus)}": {min(cpus)}, "unpinned": cpus}
    columns: dict[str, dict[str, float]] = {}
    for backend in ("asyncio", "trio"):
        for label, placement in placements.items():
            place(placement)
            columns[f"{backend}, {label}"] = anyio.run(column, backend, reps, backend=backend)
    place(cpus)
    versions = (f"Python {sys.version.split()[0]}, anyio {importlib.metadata.version('anyio')}, "
                f"trio {importlib.metadata.version('trio')}, {len(cpus)} CPUs")
    print(f"PocoFlow thread hop: {versions}, best of {reps}\n")
    print(table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
