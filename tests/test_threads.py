"""The dedicated-worker thread hop: run_in_worker means what anyio.to_thread.run_sync
means (results, errors, context, cancellation, limiter), on both backends, through
the eventfd path (Linux) and the portable one (lock + call_soon_threadsafe)."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
import sniffio

from pocoflow import threads
from pocoflow.threads import run_in_worker

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10  # seconds any Event may take before the test counts as hung

variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")


def thread_name() -> str:
    return threading.current_thread().name


def wait_until(condition: Any, what: str) -> None:
    """Block until ``condition()`` holds; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.005)


async def wait_for(event: threading.Event) -> None:
    """Await a threading.Event without blocking the loop."""
    assert await anyio.to_thread.run_sync(event.wait, WAIT)


@pytest.fixture(params=["eventfd", "portable"], autouse=True)
def pool(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
         ) -> Iterator[threads._Pool]:
    """A pool of its own for each test, on the eventfd path or the portable one;
    afterwards every worker has ended (none is left running a call)."""
    if request.param == "portable":
        monkeypatch.setattr(threads, "_has_eventfd", False)
    elif not threads._has_eventfd:
        pytest.skip("os.eventfd is Linux only")
    own = threads._Pool(threads.MAX_WORKERS, threads.IDLE_TIMEOUT)
    monkeypatch.setattr(threads, "_pool", own)
    yield own
    wait_until(lambda: len(own.idle) == len(own.workers), "busy workers to finish")
    while own.idle:
        worker = own.idle.pop()
        worker.job = None
        worker.wake()
    wait_until(lambda: not own.workers, "workers to end")


# ── results, errors, context ─────────────────────────────────────────────────


@pytest.mark.anyio
async def test_returns_the_result_from_a_pool_thread() -> None:
    """The call's result comes back; it ran in a thread named pocoflow-worker-N."""
    result, name = await run_in_worker(lambda x, y: (x + y, thread_name()), 2, 3)

    assert 5 == result
    assert name.startswith("pocoflow-worker-")


def fail_deep() -> None:
    raise ValueError("bad input")


def fail() -> None:
    fail_deep()


@pytest.mark.anyio
async def test_raises_the_exception_with_its_traceback() -> None:
    """The call's exception is raised with its type, message and traceback."""
    with pytest.raises(ValueError, match="bad input") as info:
        await run_in_worker(fail)

    names = [entry.name for entry in info.traceback]
    assert ["fail", "fail_deep"] == names[-2:]


def stop() -> None:
    raise StopIteration


@pytest.mark.anyio
@pytest.mark.parametrize("func", [fail, stop])
async def test_raises_what_anyio_raises(func: Any) -> None:
    """The exception type matches anyio.to_thread.run_sync's, StopIteration included."""
    with pytest.raises(Exception) as expected:  # noqa: PT011 - any type: we compare them
        await anyio.to_thread.run_sync(func)
    with pytest.raises(Exception) as got:  # noqa: PT011
        await run_in_worker(func)

    assert expected.type is got.type


@pytest.mark.anyio
async def test_the_call_sees_a_copy_of_the_callers_context() -> None:
    """Context variables reach the call; what the call sets stays in its copy."""
    variable.set("caller")

    def read_then_write() -> str:
        seen = variable.get()
        variable.set("worker")
        return seen

    assert "caller" == await run_in_worker(read_then_write)
    assert "caller" == variable.get()


@pytest.mark.anyio
async def test_the_call_runs_outside_any_async_library() -> None:
    """sniffio finds no library in the call, so it can start a loop of its own
    (a Flow.run inside exec)."""

    def nested() -> str:
        with pytest.raises(sniffio.AsyncLibraryNotFoundError):
            sniffio.current_async_library()
        return anyio.run(anyio.to_thread.run_sync, thread_name)

    assert not (await run_in_worker(nested)).startswith("pocoflow-worker-")


# ── threads: reuse, concurrency, the bound, idle exit ────────────────────────


@pytest.mark.anyio
async def test_sequential_calls_reuse_one_thread() -> None:
    """Calls one after another run in the same worker thread."""
    names = {await run_in_worker(thread_name) for _ in range(20)}

    assert 1 == len(names)


@pytest.mark.anyio
async def test_concurrent_calls_run_in_parallel(pool: threads._Pool) -> None:
    """Calls awaited at once run at once, each in a worker of its own."""
    barrier = threading.Barrier(5, timeout=WAIT)
    names: list[str] = []

    async def one() -> None:
        names.append(await run_in_worker(lambda: (barrier.wait(), thread_name())[1]))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)

    assert 5 == len(set(names))
    assert all(name.startswith("pocoflow-worker-") for name in names)
    assert 5 == len(pool.workers)


@pytest.mark.anyio
async def test_calls_beyond_the_bound_go_to_anyio(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every dedicated worker busy, further calls run in anyio's threads, at once."""
    small = threads._Pool(2, threads.IDLE_TIMEOUT)
    monkeypatch.setattr(threads, "_pool", small)
    barrier = threading.Barrier(4, timeout=WAIT)
    seen: list[tuple[int, str]] = []

    def meet() -> tuple[int, str]:
        barrier.wait()
        return threading.get_ident(), thread_name()

    async def one() -> None:
        seen.append(await run_in_worker(meet))

    try:
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
    finally:
        for worker in list(small.idle):
            small.idle.remove(worker)
            worker.job = None
            worker.wake()

    ours = [name for _, name in seen if name.startswith("pocoflow-worker-")]
    assert 4 == len({ident for ident, _ in seen})
    assert 2 == len(ours)


@pytest.mark.anyio
async def test_a_call_holds_a_token_of_the_default_thread_limiter() -> None:
    """Like anyio's hop, a call borrows from the loop's default thread limiter."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    entered, release = threading.Event(), threading.Event()

    def blocking() -> None:
        entered.set()
        assert release.wait(WAIT)

    async with anyio.create_task_group() as group:
        group.start_soon(run_in_worker, blocking)
        await wait_for(entered)
        borrowed = limiter.borrowed_tokens
        release.set()

    assert 1 == borrowed
    assert 0 == limiter.borrowed_tokens


@pytest.mark.anyio
async def test_a_limiter_bounds_the_calls() -> None:
    """A limiter of two tokens lets two calls run at a time; the others wait their
    turn, then run in dedicated workers too."""
    limiter = anyio.CapacityLimiter(2)
    lock = threading.Lock()
    running = peak = 0
    names: list[str] = []

    def counted() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return thread_name()

    async def one() -> None:
        names.append(await run_in_worker(counted, limiter=limiter))

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(one)

    assert 2 == peak
    assert 0 == limiter.borrowed_tokens
    assert all(name.startswith("pocoflow-worker-") for name in names)


@pytest.mark.anyio
async def test_a_cancel_while_waiting_for_a_token_stops_the_call() -> None:
    """A call cancelled while it waits for a limiter token never runs."""
    limiter = anyio.CapacityLimiter(1)
    entered, release, ran = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        entered.set()
        assert release.wait(WAIT)

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: run_in_worker(holder, limiter=limiter))
        await wait_for(entered)
        with anyio.CancelScope() as scope:

            async def cancel() -> None:
                scope.cancel()

            group.start_soon(cancel)
            await run_in_worker(ran.set, limiter=limiter)
        release.set()

    assert scope.cancelled_caught
    assert not ran.is_set()
    assert 0 == limiter.borrowed_tokens


def test_idle_workers_end(anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker left idle past the idle timeout ends its thread; the sweeper stops
    once the pool is empty."""
    quick = threads._Pool(threads.MAX_WORKERS, idle_timeout=0.05)
    monkeypatch.setattr(threads, "_pool", quick)

    worker = anyio.run(run_in_worker, threading.current_thread, backend=anyio_backend)

    worker.join(WAIT)
    assert not worker.is_alive()
    assert set() == quick.workers
    wait_until(lambda: not quick.sweeping, "the sweeper to stop")


# ── cancellation ─────────────────────────────────────────────────────────────


@pytest.mark.anyio
@pytest.mark.parametrize("abandon_on_cancel", [False, True])
async def test_a_pending_cancel_stops_the_call_before_it_starts(abandon_on_cancel: bool,
                                                                 ) -> None:
    """A call made in an already cancelled scope raises the cancel and never runs."""
    ran = threading.Event()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_in_worker(ran.set, abandon_on_cancel=abandon_on_cancel)

    assert scope.cancelled_caught
    assert not ran.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize("pattern", ["plain", "engine timeout"])
async def test_a_cancel_waits_for_the_call(pattern: str) -> None:
    """A cancel of the awaiting task lands after the call returns: the result comes
    back, and the cancel is raised at the next checkpoint. In the engine's timeout
    pattern (shield + move_on_after + abandon_on_cancel) an outer cancel waits too."""
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def work() -> str:
        entered.set()
        assert release.wait(WAIT)
        return "finished"

    scope = anyio.CancelScope()

    async def caller() -> None:
        with scope:
            if pattern == "plain":
                seen.append(await run_in_worker(work))
            else:
                with anyio.CancelScope(shield=True), anyio.move_on_after(60):
                    seen.append(await run_in_worker(work, abandon_on_cancel=True))
            seen.append("returned")
            await anyio.lowlevel.checkpoint()
            seen.append("not reached")

    async with anyio.create_task_group() as group:
        group.start_soon(caller)
        await wait_for(entered)
        scope.cancel()
        for _ in range(10):  # give a wrong implementation the chance to return early
            await anyio.lowlevel.checkpoint()
        early = list(seen)
        release.set()

    assert [] == early
    assert ["finished", "returned"] == seen
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_a_timeout_abandons_the_call_and_the_next_call_runs(
        pool: threads._Pool, caplog: pytest.LogCaptureFixture) -> None:
    """In the engine's timeout pattern the timeout returns control at once; the next
    call runs in another worker while the abandoned one goes on; the abandoned
    call's late error is dropped quietly, and its worker comes back to the pool."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        assert release.wait(WAIT)
        finished.set()
        raise RuntimeError("too late, nobody is waiting")

    with anyio.CancelScope(shield=True), anyio.move_on_after(0.05) as timeout:
        await run_in_worker(stuck, abandon_on_cancel=True)

    assert timeout.cancelled_caught
    assert not finished.is_set()
    await wait_for(entered)
    assert "next" == await run_in_worker(lambda: "next")
    assert 2 == len(pool.workers)
    release.set()
    await wait_for(finished)
    while len(pool.idle) < 2:  # the abandoned worker is back once its call is over
        await anyio.sleep(0.005)
    for _ in range(10):  # the late report reaches the loop, which drops it
        await anyio.lowlevel.checkpoint()
    assert [] == [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.anyio
async def test_an_abandoned_call_gives_its_token_back_at_once() -> None:
    """As many calls abandoned by a timeout as the loop's limiter has tokens, all still
    running: a new call still runs, on both backends, and each abandoned call's token
    came back when it was abandoned. (On trio they were kept until the threads ended,
    so 40 attempts hung past a Node.timeout stopped every later call of the run.)"""
    limiter = anyio.to_thread.current_default_thread_limiter()
    release = threading.Event()

    def stuck() -> None:
        assert release.wait(WAIT)

    try:
        assert threads.MAX_WORKERS == limiter.total_tokens
        for _ in range(threads.MAX_WORKERS):
            with anyio.CancelScope(shield=True), anyio.move_on_after(0.01):
                await run_in_worker(stuck, abandon_on_cancel=True)
            assert 0 == limiter.borrowed_tokens
        with anyio.fail_after(WAIT):
            assert "next" == await run_in_worker(lambda: "next")
    finally:
        release.set()


def test_a_call_left_behind_by_its_run_ends_quietly(anyio_backend: str,
                                                    pool: threads._Pool) -> None:
    """A call abandoned by a run that has ended since (its loop closed) finishes
    without error, and its worker serves the next run."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        assert release.wait(WAIT)
        finished.set()

    async def abandon() -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: run_in_worker(stuck, abandon_on_cancel=True))
                await wait_for(entered)
                scope.cancel()

    anyio.run(abandon, backend=anyio_backend)
    release.set()
    assert finished.wait(WAIT)
    wait_until(lambda: len(pool.idle) == 1, "the worker to come back")

    name = anyio.run(run_in_worker, thread_name, backend=anyio_backend)

    assert name.startswith("pocoflow-worker-")
    assert 1 == len(pool.workers)


# ── processes and threads ────────────────────────────────────────────────────


def test_loops_in_several_threads_share_the_pool(pool: threads._Pool) -> None:
    """asyncio and trio loops in four threads hop at the same time, each getting its
    own results back, through one pool."""
    errors: list[BaseException] = []
    names: set[str] = set()

    def loop(backend: str, offset: int) -> None:
        async def main() -> None:
            for i in range(offset, offset + 200):
                value, name = await run_in_worker(lambda x: (x, thread_name()), i)
                assert i == value
                names.add(name)

        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    runners = [threading.Thread(target=loop, args=(backend, 1000 * k))
               for k, backend in enumerate(["asyncio", "trio", "asyncio", "trio"])]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)

    assert [] == errors
    assert not any(runner.is_alive() for runner in runners)
    assert all(name.startswith("pocoflow-worker-") for name in names)
    assert len(pool.workers) <= 4


FORK_CHILD = textwrap.dedent("""
    import os, sys, threading
    import anyio
    from pocoflow import threads

    def name():
        return threading.current_thread().name

    backend = sys.argv[1]
    print("parent", anyio.run(threads.run_in_worker, name, backend=backend), flush=True)
    pid = os.fork()
    if pid == 0:
        try:
            got = anyio.run(threads.run_in_worker, name, backend=backend)
            print("child", got, len(threads._pool.workers), flush=True)
        finally:
            os._exit(0)
    print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
""")


def test_a_forked_child_starts_with_an_empty_pool(anyio_backend: str) -> None:
    """After os.fork the child has a pool of its own (the parent's threads are not
    there) and hops through it."""
    result = subprocess.run([sys.executable, "-c", FORK_CHILD, anyio_backend], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})

    assert ["parent pocoflow-worker-1", "child pocoflow-worker-1 1", "exit 0"] == (
        result.stdout.splitlines()), result.stderr


FORK_INSIDE = textwrap.dedent("""
    import os, sys
    import anyio
    from pocoflow import threads

    def fork():
        return os.fork()

    async def main():
        pid = await threads.run_in_worker(fork)
        assert pid != 0, "the child's call came back to the parent's loop"
        print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
        print("again", await threads.run_in_worker(str, 42), flush=True)

    anyio.run(main, backend=sys.argv[1])
""")


def test_a_child_forked_inside_a_call_ends_with_the_call(anyio_backend: str) -> None:
    """A child forked by the call itself ends when the call returns in it; only the
    parent's result reaches the parent's loop, and the parent goes on hopping."""
    result = subprocess.run([sys.executable, "-c", FORK_INSIDE, anyio_backend], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})

    assert ["child exit 0", "again 42"] == result.stdout.splitlines(), result.stderr


CTRL_C_IN_A_HOP = textwrap.dedent("""
    import signal, sys
    import anyio
    from pocoflow import Flow, Node, Store, threads

    handed_over = threads._start

    def hand_over_then_ctrl_c(*args):
        handed_over(*args)
        if not getattr(hand_over_then_ctrl_c, "fired", False):
            hand_over_then_ctrl_c.fired = True
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, once a call is with its worker

    threads._start = hand_over_then_ctrl_c

    class Step(Node):  # a sync node: its exec hops to a worker thread
        def exec(self, prep_res):
            return None

    first = node = Step()
    for _ in range(30):
        node = node.then("default", Step())
    flow = Flow(first)
    if sys.argv[2] == "portable":
        threads._has_eventfd = False

    async def main():
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(flow.run_async, Store())

    def kinds(error):  # (trio raises it in a group, from the task group)
        inner = getattr(error, "exceptions", None)
        return [k for e in inner for k in kinds(e)] if inner else [type(error).__name__]

    try:
        anyio.run(main, backend=sys.argv[1])
    except BaseException as error:
        print(*kinds(error), flush=True)
    else:
        print("not interrupted", flush=True)
""")


def test_a_ctrl_c_while_calls_are_with_their_workers_stops_the_program(
    anyio_backend: str, request: pytest.FixtureRequest
) -> None:
    """Ctrl-C lands right after a call was handed to its worker thread, while twenty
    runs hop: the program stops with KeyboardInterrupt. (On trio it could land in the
    task before it waited for the result; the result then woke a task that was gone,
    which killed the loop's inbox: every later call waited forever, and the program
    hung.)"""
    path = request.node.callspec.params["pool"]  # eventfd or portable, as the pool fixture
    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_HOP, anyio_backend, path],
                            cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})

    assert ["KeyboardInterrupt"] == result.stdout.splitlines(), result.stderr
