"""PocoFlow benchmarks: per-step overhead, concurrency and import cost.

``python benchmarks/run.py [--quick] [--no-pin] [--postgres URL | --no-postgres]``
prints one markdown table (scenario, value, unit, target, ok); a missed target
only shows as ok = NO.

(a) µs per step of a node looping on itself 2,000 times, timed around
    ``await flow.run_async(store)`` in one ``anyio.run``, best of 5: AsyncNode,
    threaded sync Node, sync Node with ``threaded = False``; plus µs per bare
    ``await anyio.to_thread.run_sync(f)`` hop, which the threaded node is
    judged against. Pinned to one CPU (Linux) so the hop is not bimodal.
(b) Wall time of 200 simultaneous runs of one 5-AsyncNode Flow (each node
    sleeps 20 ms), best of 3, every store checked; ``ru_maxrss`` of a fresh
    process running it once.
(c) Wall ms of ``python -c "from pocoflow import Flow, Node, Store"`` minus
    ``python -c pass`` (best of 10, bytecode cached), with and without site;
    and that the import loads none of sqlalchemy, streamlit, anyio.
(p-e) A recorded step writing one small key beside a 1 KB, 1 MB and 10 MB store
    (``benchmarks/store_size.py``).
(p-a) .. (p-d) Persistence, from ``benchmarks/persistence.py`` (its docstring has
    the details): a 300-step loop recorded in SQLite against a raw sqlite3
    floor; DB bytes of 100 and 200 appends of 1 KB against an append-only
    floor; 200 concurrent recorded runs; (p-a) and (p-c) on PostgreSQL
    (``--postgres URL``, ``$POCOFLOW_BENCH_POSTGRES_URL``, or a throwaway server).

benchmarks/README.md says why each measurement is taken the way it is.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import itertools
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import pocoflow
from pocoflow import AsyncNode, Flow, Node, Store, UnmatchedActionWarning

STEPS = 2_000
CHAIN, RUNS, SLEEP = 5, 200, 0.02
IMPORT = "from pocoflow import Flow, Node, Store"
HEAVY = ("sqlalchemy", "streamlit", "anyio")
US = "µs"


@dataclass
class Row:
    scenario: str
    value: str
    unit: str
    target: str = "—"
    ok: bool | None = None


# ── (a) step overhead ────────────────────────────────────────────────────────


class Counting:
    """The looping nodes' ``post``: count the step, say "again" until STEPS."""

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


def per_step(node: Node) -> Callable[[], Awaitable[float]]:
    node.then("again", node)
    flow = Flow(node, max_steps=100 * STEPS)

    async def measure() -> float:
        store = Store({"n": 0})
        began = time.perf_counter()
        await flow.run_async(store)
        elapsed = time.perf_counter() - began
        if store["n"] != STEPS:
            raise RuntimeError(f"{flow.flow_name}: {store['n']} steps instead of {STEPS}")
        return elapsed / STEPS * 1e6

    return measure


def noop() -> None:
    """The work of one hop: none."""


async def per_hop() -> float:
    began = time.perf_counter()
    for _ in range(STEPS):
        await anyio.to_thread.run_sync(noop)
    return (time.perf_counter() - began) / STEPS * 1e6


async def step_costs(reps: int) -> dict[str, float]:
    """Best µs per step (per hop for "hop") of each variant, the variants taking turns."""
    measures = {"async": per_step(AsyncLoop()), "threaded": per_step(ThreadedLoop()),
                "inline": per_step(InlineLoop()), "hop": per_hop}
    best = dict.fromkeys(measures, math.inf)
    for _ in range(reps):
        for key, measure in measures.items():
            gc.collect()
            best[key] = min(best[key], await measure())
    return best


def place_threads(cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of this process (PocoFlow's worker threads
    outlive an ``anyio.run``, and a thread keeps the affinity it had)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def one_cpu(enabled: bool) -> Iterator[str]:
    """Pin this process, all its threads and those it starts meanwhile, to one CPU."""
    if not enabled or not hasattr(os, "sched_setaffinity") or not os.path.isdir(
            "/proc/self/task"):
        yield "not pinned"
        return
    cpus = os.sched_getaffinity(0)
    place_threads({min(cpus)})
    try:
        yield f"pinned to CPU {min(cpus)}"
    finally:
        place_threads(cpus)


# ── (b) concurrent runs of one Flow ──────────────────────────────────────────


class Sleeper(AsyncNode):
    """Adds ``k`` to ``store["x"]`` after an I/O-like sleep and signs ``store["trail"]``."""

    def __init__(self, k: int) -> None:
        super().__init__(name=f"sleep{k}")
        self.k = k

    def prep(self, store: Any) -> int:
        return store["x"]

    async def exec_async(self, prep_res: int) -> int:
        await anyio.sleep(SLEEP)
        return prep_res + self.k

    def post(self, store: Any, prep_res: int, exec_res: int) -> None:
        store["x"] = exec_res
        store["trail"] = [*store["trail"], self.name]


def concurrent_runs() -> float:
    """Wall seconds of RUNS simultaneous runs of one chain Flow; checks every store."""
    nodes = [Sleeper(k) for k in range(1, CHAIN + 1)]
    for here, following in itertools.pairwise(nodes):
        here.then("default", following)
    flow = Flow(nodes[0])
    stores = [Store({"x": 1000 * i, "trail": []}) for i in range(RUNS)]

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for store in stores:
                group.start_soon(flow.run_async, store)

    began = time.perf_counter()
    anyio.run(main)
    elapsed = time.perf_counter() - began
    trail = [node.name for node in nodes]
    for i, store in enumerate(stores):
        want = 1000 * i + sum(range(1, CHAIN + 1))
        if store["x"] != want or store["trail"] != trail:
            raise RuntimeError(f"run {i}: x={store['x']} trail={store['trail']}, "
                               f"expected x={want} trail={trail}")
    return elapsed


def max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def rss_of_fresh_process() -> tuple[float, float]:
    """Peak RSS (MB) of a new process after its imports, and after running (b) once."""
    # sh forks (the "; exit" stops it exec-ing in place), so Python starts from sh's
    # small maxrss instead of inheriting ours.
    cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, __file__, "--rss-child"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


# ── (c) import cost ──────────────────────────────────────────────────────────


def import_costs(reps: int, no_site: bool, pycache: str) -> tuple[float, float]:
    """Best wall ms of ``python -c pass`` and of ``python -c IMPORT``, interleaved."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    if no_site:  # without site, the editable install's .pth is not read: point at the repo
        env["PYTHONPATH"] = str(Path(pocoflow.__file__).parent.parent)
    flags = ["-S"] if no_site else []

    def wall_ms(code: str) -> float:
        began = time.perf_counter()
        subprocess.run([sys.executable, *flags, "-c", code], env=env, check=True)
        return (time.perf_counter() - began) * 1e3

    for code in ("pass", IMPORT):  # warm-up: fills the bytecode cache
        wall_ms(code)
    runs = [(wall_ms("pass"), wall_ms(IMPORT)) for _ in range(reps)]
    return min(bare for bare, _ in runs), min(imp for _, imp in runs)


def heavy_modules_loaded() -> list[str]:
    code = f"{IMPORT}; import sys; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.split()


# ── report ───────────────────────────────────────────────────────────────────


def table(rows: list[Row]) -> str:
    marks = {True: "yes", False: "NO", None: "—"}
    cells = [["scenario", "value", "unit", "target", "ok"]]
    cells += [[r.scenario, r.value, r.unit, r.target, marks[r.ok]] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
             for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin (a) to one CPU")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="PostgreSQL server for (p-d) (default: "
                             "$POCOFLOW_BENCH_POSTGRES_URL, else a throwaway server)")
    parser.add_argument("--no-postgres", action="store_true", help="leave out (p-d)")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UnmatchedActionWarning)
    if args.rss_child:
        before = max_rss_mb()
        concurrent_runs()
        print(f"{before:.1f} {max_rss_mb():.1f}")
        return 0
    reps_a, reps_b, reps_c = (2, 1, 3) if args.quick else (5, 3, 10)

    with one_cpu(not args.no_pin) as placement:
        cost = anyio.run(step_costs, reps_a)
    overhead = cost["threaded"] - cost["inline"]
    hop_share = overhead / cost["hop"]
    wall = min(concurrent_runs() for _ in range(reps_b))
    rss_imports, rss_peak = rss_of_fresh_process()
    with tempfile.TemporaryDirectory(prefix="pocoflow-bench-pycache-") as pycache:
        bare, imported = import_costs(reps_c, False, pycache)
        bare_s, imported_s = import_costs(reps_c, True, pycache)
    heavy = heavy_modules_loaded()
    sys.modules.setdefault("run", sys.modules[__name__])  # persistence imports Row from us
    import persistence

    persisted, notes = persistence.measure(
        quick=args.quick, pin=not args.no_pin, postgres_url=args.postgres,
        start_postgres=not args.no_postgres)
    import store_size

    persisted += store_size.measure(quick=args.quick, pin=not args.no_pin)

    rows = [
        Row("(a) AsyncNode, per step", f"{cost['async']:.2f}", US, f"≤ 4 {US}",
            cost["async"] <= 4),
        Row("(a) raw anyio.to_thread.run_sync hop", f"{cost['hop']:.2f}", US),
        Row("(a) sync Node (threaded), per step", f"{cost['threaded']:.2f}", US),
        Row("(a) thread hop in a step (threaded step - threaded=False step)",
            f"{overhead:.2f}", US),
        Row("(a) ... as a share of the anyio.to_thread.run_sync hop", f"{hop_share:.2f}",
            "x", "≤ 0.6x", hop_share <= 0.6),
        Row("(a) sync Node threaded=False, per step", f"{cost['inline']:.2f}", US,
            f"≤ 3 {US}", cost["inline"] <= 3),
        Row(f"(b) {RUNS} concurrent runs x {CHAIN} nodes x {SLEEP * 1e3:.0f} ms sleep",
            f"{wall:.3f}", "s", "≤ 0.13 s", wall <= 0.13),
        Row("(b) peak RSS of a fresh process running (b)", f"{rss_peak:.1f}", "MB"),
        Row("(b) ... of which its imports", f"{rss_imports:.1f}", "MB"),
        Row("(c) bare interpreter (-c pass)", f"{bare:.1f}", "ms"),
        Row(f"(c) {IMPORT}", f"{imported:.1f}", "ms", "≤ bare + 31 ms",
            imported - bare <= 31),
        Row("(c) import cost (difference)", f"{imported - bare:.1f}", "ms", "≤ 31 ms",
            imported - bare <= 31),
        Row("(c) bare interpreter without site (-S)", f"{bare_s:.1f}", "ms"),
        Row("(c) import cost without site (-S), difference", f"{imported_s - bare_s:.1f}",
            "ms", "≤ 31 ms", imported_s - bare_s <= 31),
        Row(f"(c) {', '.join(HEAVY)} not imported", "no" if heavy else "yes", "", "yes",
            not heavy),
        *persisted,
    ]
    versions = f"Python {sys.version.split()[0]}, anyio {importlib.metadata.version('anyio')}"
    quick = ", --quick" if args.quick else ""
    print(f"PocoFlow benchmarks: {versions}, asyncio; (a) {placement}{quick}\n")
    print(table(rows))
    if heavy:
        print(f"\nloaded by `{IMPORT}`: {', '.join(heavy)}")
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
