"""PocoFlow benchmark: does a recorded step cost what it touched, or the store's size?

``python benchmarks/store_size.py [--quick] [--no-pin]`` prints one markdown table.

(p-e) An AsyncNode loops on itself adding 1 to ``store["n"]``, recorded in a new
      SQLite file, beside ballast it never reads: 1 KB of small values, then
      1 MB and 10 MB of a list of dicts (``{"id", "text", "score"}``). A sink
      notes when each step is done (after its commit: the recorder is heard
      first), and the µs per step is the mean time between steps, leaving out
      the first steps and the last (whose fixed costs encode or compare the
      whole store once per run: the input, the first full snapshot, the last
      step's full compare) and keeping the periodic full compares the tracker
      makes on the way. Best of a few repetitions, the three sizes taking
      turns. Target: 10 MB at most 2x 1 KB.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from persistence import Counter, forget
from run import US, Row, one_cpu, table

from pocoflow import Flow, Store

STEPS, SKIP = 1_000, 5
SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "10 MB": 10_000_000}


def ballast(nbytes: int) -> dict[str, Any]:
    """About *nbytes* of JSON the loop never reads."""
    if nbytes <= 10_000:
        return {f"k{i}": "v" * 40 for i in range(max(1, nbytes // 50))}
    record = {"id": 0, "text": "lorem ipsum " * 6, "score": 0.5}
    per_record = len('{"id":00000,"text":"","score":0.5},') + len(record["text"])
    return {"docs": [{**record, "id": i} for i in range(nbytes // per_record)]}


async def step_us(path: Path, data: dict[str, Any]) -> float:
    """Mean µs per step of one recorded run, its first and last SKIP steps left out."""
    done: list[float] = []
    flow = Flow(Counter(STEPS), max_steps=10 * STEPS, db_path=path, run_id="size",
                sinks=[lambda event: done.append(time.perf_counter())
                       if event.kind == "node_end" else None])
    await flow.db.open()  # type: ignore[union-attr]
    store = Store({"n": 0, **data})
    gc.collect()
    await flow.run_async(store)
    if store["n"] != STEPS:
        raise RuntimeError(f"{STEPS} steps expected, ran {store['n']}")
    forget(flow)
    steady = done[SKIP:-SKIP]
    return (steady[-1] - steady[0]) / (len(steady) - 1) * 1e6


def measure(*, quick: bool = False, pin: bool = True) -> list[Row]:
    reps = 1 if quick else 3
    stores = {label: ballast(size) for label, size in SIZES.items()}
    best = dict.fromkeys(SIZES, float("inf"))
    with tempfile.TemporaryDirectory(prefix="pocoflow-bench-size-") as tmp, one_cpu(pin):
        for rep in range(reps):
            for label, data in stores.items():
                path = Path(tmp) / f"{label}-{rep}.db"
                best[label] = min(best[label], anyio.run(step_us, path, data))
    ratio = best["10 MB"] / best["1 KB"]
    rows = [Row(f"(p-e) recorded step writing one small key, {label} store beside it",
                f"{us:.1f}", US) for label, us in best.items()]
    rows.append(Row("(p-e) ... 10 MB store / 1 KB store", f"{ratio:.2f}", "x", "≤ 2x",
                    ratio <= 2))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args()
    print(table(measure(quick=args.quick, pin=not args.no_pin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
