"""A faster thread hop: a sync call in a dedicated worker thread, awaited from asyncio or trio.

``await run_in_worker(func, *args)`` means what ``await anyio.to_thread.run_sync(func,
*args)`` means, and takes about 0.4 of its time on asyncio and on trio:

- the call runs in a copy of the caller's context (contextvars), with sniffio's
  "current async library" cleared, so a ``Flow.run`` inside it starts its own loop;
- its result comes back, or its exception is raised with its traceback (a
  ``StopIteration`` as ``RuntimeError``, and on trio a returned coroutine as
  ``TypeError``, as from anyio);
- a cancel already pending when the call is made is raised before the call starts;
- ``abandon_on_cancel=False``: a cancel of the awaiting task is delivered only
  after ``func`` returns, at the caller's next checkpoint (the result is returned);
- ``abandon_on_cancel=True``: a cancel returns control at once; the thread runs the
  call to its end, its outcome is dropped, and that worker takes no new call
  until it is done. Inside ``CancelScope(shield=True)`` only a scope nested in
  the shield (a ``move_on_after``) abandons the call;
- a call takes a token of *limiter*, by default anyio's default thread limiter of
  the running loop (40 per loop unless changed), as ``anyio.to_thread.run_sync``
  does. The token comes back when the awaiting task stops waiting, on both
  backends (as anyio does on asyncio; ``trio.to_thread`` keeps an abandoned call's
  token until its thread ends, so 40 calls hung past a ``Node.timeout`` would stop
  every later call of that trio run). Past ``MAX_WORKERS`` calls going on at once,
  a call goes to ``anyio.to_thread.run_sync``, where each backend keeps its own way.

Not carried over: ``anyio.from_thread.run``/``run_sync``/``check_cancelled``
without an explicit token do not work inside a dedicated worker (they do in the
fallback); pass ``token=anyio.lowlevel.current_token()`` taken on the loop.

How it is fast. Up to ``MAX_WORKERS`` daemon threads (``pocoflow-worker-N``) are
shared by every loop of the process. Each one sleeps in a blocking read of its own
eventfd, which the caller writes (see ``_Worker``); the outcome comes back through
the loop's inbox, another eventfd the loop watches (asyncio ``loop.add_reader``,
on trio a system task in ``wait_readable``) plus a deque of reports. Without
eventfd (not Linux): a raw lock, and ``loop.call_soon_threadsafe`` or
``TrioToken.run_sync_soon``. A worker goes back on the idle stack (last in, first
out, so sequential calls reuse one thread) before it reports; a sweeper thread
ends those idle for ``IDLE_TIMEOUT`` seconds. A call waits for a token of its
limiter as anyio's would, then takes a worker; when all ``MAX_WORKERS`` are busy
(loops of several threads at once), it goes to ``anyio.to_thread.run_sync``.
A forked child starts with an empty pool. ``benchmarks/thread_hop.py`` measures
the hop against anyio's; the choices and their numbers are in ``docs/design.md``.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import contextvars
import functools
import itertools
import os
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from pocoflow.logging import get_logger

try:
    from sniffio import AsyncLibraryNotFoundError as _NoLibrary
    from sniffio import current_async_library as _current_library
    from sniffio import current_async_library_cvar as _library_cvar
except ImportError:  # pragma: no cover - anyio assumes asyncio then, and so do we
    _library_cvar = None

    class _NoLibrary(Exception):  # type: ignore[no-redef]
        pass

    def _current_library() -> str:
        return "asyncio"


_log = get_logger("threads")


__all__ = ["IDLE_TIMEOUT", "MAX_WORKERS", "run_in_worker"]

T = TypeVar("T")

#: At most this many dedicated workers in the process, busy or idle, shared by all
#: its loops. anyio's default thread limiter allows 40 calls at once per loop, so
#: one loop at its default limit never needs the fallback. Read when the pool is made.
MAX_WORKERS = 40
#: Seconds a worker waits for a call before its thread ends (anyio's and trio's
#: idle threads: 10). Read when the pool is made.
IDLE_TIMEOUT = 10.0

_anyio_run_sync = anyio.to_thread.run_sync
_checkpoint_if_cancelled = anyio.lowlevel.checkpoint_if_cancelled
_get_running_loop = asyncio.get_running_loop
_copy_context = contextvars.copy_context
_monotonic = time.monotonic
_has_eventfd = hasattr(os, "eventfd")

_Report = Callable[[Any, Any, "BaseException | None"], None]


# ── the pool: shared by every loop of the process ────────────────────────────


class _Worker:
    """One dedicated thread, asleep in ``wait()`` until a caller sets ``job`` and calls
    ``wake()``; a ``job`` of None tells it to end.

    On Linux it sleeps in a blocking read of its own eventfd: ``os.eventfd_write``
    lets go of the GIL for its system call, so the worker wakes, takes the GIL and
    runs the call at once, instead of waking to find the GIL held (with a lock: six
    context switches per hop instead of two). Elsewhere it sleeps on a raw lock.
    """

    __slots__ = ("fd", "idle_since", "job", "pool", "wait", "wake")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.job: tuple[Any, ...] | None = None
        self.idle_since = 0.0
        self.wait: Callable[[], object]
        self.wake: Callable[[], object]
        if _has_eventfd:
            self.fd = os.eventfd(0, os.EFD_CLOEXEC)
            self.wait = functools.partial(os.eventfd_read, self.fd)
            self.wake = functools.partial(os.eventfd_write, self.fd, 1)
        else:
            self.fd = -1
            lock = _thread.allocate_lock()
            lock.acquire()
            self.wait, self.wake = lock.acquire, lock.release

    def serve(self) -> None:
        wait, idle = self.wait, self.pool.idle
        try:
            while True:
                wait()
                job = self.job
                if job is None:
                    return
                self.job = None
                func, args, context, post, report, ticket = job
                result = error = None
                try:
                    result = context.run(func, *args)
                except BaseException as exc:
                    error = exc
                if self.pool.forked:  # forked inside the call: this is the child
                    return
                self.idle_since = _monotonic()
                idle.append(self)  # before the report, so the caller's next call finds us
                try:  # noqa: SIM105 - per call: a try costs nothing, suppress() does
                    post(report, ticket, result, error)
                except RuntimeError:  # the loop is closed, the trio run over: nobody waits
                    pass
                del job, func, args, context, post, report, ticket, result, error
        finally:
            if not self.pool.forked:  # a child leaves its parent's pool (and lock) alone
                self.pool.forget(self)


class _Pool:
    """At most ``max_workers`` workers; the idle ones on a stack, the hottest on top,
    so the one at the bottom has been idle longest. A sweeper thread, running while
    the pool has workers, ends those idle for ``idle_timeout`` seconds."""

    def __init__(self, max_workers: int, idle_timeout: float) -> None:
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.idle: list[_Worker] = []
        self.workers: set[_Worker] = set()
        self.sweeping = False
        self.forked = False  # set in a forked child, whose pool this no longer is
        self.lock = threading.Lock()
        self.numbers = itertools.count(1)

    def claim(self) -> _Worker | None:
        """An idle worker, else a new one, else None (``max_workers`` are busy)."""
        try:
            return self.idle.pop()  # atomic: two loops never claim one worker
        except IndexError:
            pass
        with self.lock:
            if len(self.workers) >= self.max_workers:
                return None
            worker = _Worker(self)
            self.workers.add(worker)
            name = f"pocoflow-worker-{next(self.numbers)}"
        try:
            threading.Thread(target=worker.serve, name=name, daemon=True).start()
        except BaseException:
            self.forget(worker)
            raise
        with self.lock:
            sweep, self.sweeping = not self.sweeping, True
        if sweep:
            try:
                threading.Thread(
                    target=self.sweep, name="pocoflow-worker-sweeper", daemon=True
                ).start()
            except RuntimeError:  # no thread to spare now: the next new worker tries again
                with self.lock:
                    self.sweeping = False
        return worker

    def forget(self, worker: _Worker) -> None:
        """A worker's thread ended (or never started): it leaves the pool."""
        with self.lock:
            self.workers.discard(worker)
            fd, worker.fd = worker.fd, -1
        if fd >= 0:
            os.close(fd)

    def sweep(self) -> None:
        """End the workers idle for ``idle_timeout``; stop once the pool is empty."""
        idle = self.idle
        while True:
            time.sleep(self.idle_timeout / 2)
            expired = _monotonic() - self.idle_timeout
            while idle:
                try:
                    worker = idle[0]
                except IndexError:
                    break
                if worker.idle_since > expired:
                    break
                try:
                    idle.remove(worker)  # atomic, like pop: exactly one of them wins
                except ValueError:
                    continue
                worker.job = None
                worker.wake()
            with self.lock:
                if not self.workers:
                    self.sweeping = False
                    return


_pool = _Pool(MAX_WORKERS, IDLE_TIMEOUT)


def _start(
    worker: _Worker,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    post: Any,
    report: _Report,
    ticket: Any,
) -> None:
    """Hand *worker* the call, in a copy of this context with no async library set."""
    context = _copy_context()
    if _library_cvar is not None and context.get(_library_cvar) is not None:
        context.run(_library_cvar.set, None)
    worker.job = (func, args, context, post, report, ticket)
    worker.wake()


# ── inboxes: how an outcome gets back to its loop ────────────────────────────


class _Inbox:
    """Reports posted by workers, run on the loop that watches the eventfd ``fd``.

    The fd is closed when the inbox is garbage. A worker that still has to report
    holds the inbox, so a late report never writes to a reused descriptor.
    """

    __slots__ = ("__weakref__", "fd", "items", "then")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.items: deque[tuple[Any, ...]] = deque()
        #: once nobody watches ``fd`` (trio cancelled its listener as its run ends, while
        #: tasks still wait for calls): how a report asks the loop to drain instead
        self.then: Callable[[Callable[[], None]], Any] | None = None
        # not at exit: a daemon worker may still post then, and the OS closes it anyway
        weakref.finalize(self, os.close, self.fd).atexit = False

    def post(
        self,
        report: _Report,
        ticket: Any,
        result: Any,
        error: BaseException | None,
    ) -> None:
        """From a worker: have the loop call ``report(ticket, result, error)``."""
        self.items.append((report, ticket, result, error))
        os.eventfd_write(self.fd, 1)
        then = self.then
        if then is not None:
            with contextlib.suppress(RuntimeError):  # (the trio run is over: nobody waits)
                then(self.drain)

    def drain(self) -> None:
        """On the loop: run every report posted so far."""
        try:  # noqa: SIM105 - per call: a try costs nothing, suppress() does
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        items = self.items
        while items:
            report, ticket, result, error = items.popleft()
            try:
                report(ticket, result, error)
            except Exception:  # one bad report must not stop every later one
                _log.error("Reporting a worker thread's result failed", exc_info=True)


# ── asyncio ──────────────────────────────────────────────────────────────────


class _Local(threading.local):
    """Per thread: the asyncio loop it last hopped from (a weakref), that loop's post
    and anyio's default thread limiter there."""

    home: tuple[Callable[[], Any], Any, Any] = (lambda: None, None, None)


_local = _Local()
_asyncio_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = (
    weakref.WeakKeyDictionary()
)
_asyncio_inboxes_lock = threading.Lock()


def _asyncio_home(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[], Any], Any, Any]:
    """*loop*'s post (its eventfd inbox, made once per loop) and default limiter."""
    post: Any = loop.call_soon_threadsafe
    if _has_eventfd:
        with _asyncio_inboxes_lock:
            inbox = _asyncio_inboxes.get(loop)
            if inbox is None:
                inbox = _Inbox()
                try:
                    loop.add_reader(inbox.fd, inbox.drain)
                except NotImplementedError:  # no add_reader (Windows proactor): no inbox
                    inbox = None
                else:
                    _asyncio_inboxes[loop] = inbox
        if inbox is not None:
            post = inbox.post
    home = (weakref.ref(loop), post, anyio.to_thread.current_default_thread_limiter())
    _local.home = home
    return home


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand the outcome to the awaiting task, unless it left."""
    if future.done():  # abandoned, or cancelled by plain asyncio
        return
    if error is None:
        future.set_result(result)
        return
    if isinstance(error, StopIteration):  # a Future cannot hold one (as anyio does)
        new_error = RuntimeError("coroutine raised StopIteration")
        new_error.__cause__ = error
        error = new_error
    future.set_exception(error)


# ── trio ─────────────────────────────────────────────────────────────────────

_trio: Any = None  # the trio module, imported by the first trio call
_outcome: Any = None
_trio_homes: Any = None  # trio.lowlevel.RunVar[_TrioHome]


class _TrioHome:
    """Per trio run: where outcomes are posted, and trio's default thread limiter."""

    __slots__ = ("limiter", "post")

    def __init__(self, post: Any, limiter: Any) -> None:
        self.post = post
        self.limiter = limiter


class _TrioCall:
    """One call as trio sees it: the waiting task (None once it left), the limiter."""

    __slots__ = ("limiter", "task")

    def __init__(self, task: Any, limiter: Any) -> None:
        self.task = task
        self.limiter = limiter

    def abandon(self, raise_cancel: Any) -> Any:
        self.task = None
        limiter, self.limiter = self.limiter, None
        limiter.release_on_behalf_of(self)  # its token comes back now, as on asyncio
        return _trio.lowlevel.Abort.SUCCEEDED


def _refuse(raise_cancel: Any) -> Any:
    return _trio.lowlevel.Abort.FAILED  # trio delivers the cancel at the next checkpoint


def _trio_report(call: _TrioCall, result: Any, error: BaseException | None) -> None:
    """In the trio run: give back the token (unless the call was abandoned, which
    gave it back), then wake the task unless it left."""
    if call.limiter is not None:
        call.limiter.release_on_behalf_of(call)
    if error is None and isinstance(result, types.CoroutineType):  # as trio.to_thread does
        result.close()
        error = TypeError("Trio expected a sync function, but the call returned a coroutine.")
    task = call.task
    if task is not None:
        call.task = None
        _trio.lowlevel.reschedule(
            task, _outcome.Value(result) if error is None else _outcome.Error(error)
        )


async def _listen(inbox: _Inbox) -> None:
    try:
        while True:
            await _trio.lowlevel.wait_readable(inbox.fd)
            inbox.drain()
    finally:  # cancelled as the main task ends; a system task (a stream's run) may still
        # wait for a call: its report reaches the loop through the token from now on
        inbox.then = _trio.lowlevel.current_trio_token().run_sync_soon
        inbox.drain()


def _trio_home() -> _TrioHome:
    """This run's home, made with its inbox listener on the run's first call."""
    global _trio, _outcome, _trio_homes
    if _trio is None:
        import outcome
        import trio

        _trio, _outcome = trio, outcome
        _trio_homes = trio.lowlevel.RunVar("pocoflow.threads")
        # as trio.to_thread: a Ctrl-C must not land between handing a call to its worker
        # and waiting for the result (the report would then wake a task gone elsewhere)
        trio.lowlevel.enable_ki_protection(_on_trio)
    home: _TrioHome | None = _trio_homes.get(None)
    if home is not None:
        return home
    if _has_eventfd:
        inbox = _Inbox()
        _trio.lowlevel.spawn_system_task(_listen, inbox, name="pocoflow.threads inbox")
        post: Any = inbox.post
    else:
        post = _trio.lowlevel.current_trio_token().run_sync_soon
    home = _TrioHome(post, _trio.to_thread.current_default_thread_limiter())
    _trio_homes.set(home)
    return home


async def _on_trio(
    func: Callable[..., T], args: tuple[Any, ...], abandon_on_cancel: bool, limiter: Any
) -> T:
    home = _trio_home()
    lowlevel = _trio.lowlevel
    await lowlevel.checkpoint_if_cancelled()
    tokens = home.limiter if limiter is None else limiter
    call = _TrioCall(lowlevel.current_task(), tokens)
    try:
        tokens.acquire_on_behalf_of_nowait(call)
    except (_trio.WouldBlock, anyio.WouldBlock):  # wait for a token, as trio would
        await tokens.acquire_on_behalf_of(call)
    worker = None
    try:
        worker = _pool.claim()
    finally:
        if worker is None:
            tokens.release_on_behalf_of(call)
    if worker is None:
        return await _anyio_run_sync(
            func, *args, abandon_on_cancel=abandon_on_cancel, limiter=limiter
        )
    _start(worker, func, args, home.post, _trio_report, call)
    return await lowlevel.wait_task_rescheduled(  # type: ignore[no-any-return]
        call.abandon if abandon_on_cancel else _refuse
    )


# ── the entry point ──────────────────────────────────────────────────────────


async def run_in_worker(
    func: Callable[..., T], *args: Any, abandon_on_cancel: bool = False, limiter: Any = None
) -> T:
    """Call ``func(*args)`` in a dedicated worker thread and return its result.

    Means what ``anyio.to_thread.run_sync(func, *args, abandon_on_cancel=...,
    limiter=...)`` means, in about 0.4 of its time; see the module docstring.
    """
    try:
        library = _current_library()
    except _NoLibrary:
        library = None
    if library != "asyncio":
        if library == "trio":
            return await _on_trio(func, args, abandon_on_cancel, limiter)
        return await _anyio_run_sync(
            func, *args, abandon_on_cancel=abandon_on_cancel, limiter=limiter
        )
    # asyncio, inline: one coroutine less per hop
    await _checkpoint_if_cancelled()
    loop = _get_running_loop()
    loop_ref, post, tokens = _local.home
    if loop_ref() is not loop:
        loop_ref, post, tokens = _asyncio_home(loop)
    if limiter is not None:
        tokens = limiter
    future = loop.create_future()
    try:
        tokens.acquire_on_behalf_of_nowait(future)
    except anyio.WouldBlock:  # wait for a token, as anyio would (a cancel stops the wait)
        await tokens.acquire_on_behalf_of(future)
    worker = None
    try:
        worker = _pool.claim()
    finally:
        if worker is None:
            tokens.release_on_behalf_of(future)
    if worker is None:
        return await _anyio_run_sync(
            func, *args, abandon_on_cancel=abandon_on_cancel, limiter=limiter
        )
    try:
        _start(worker, func, args, post, _settle, future)
        if abandon_on_cancel:
            return await future
        with anyio.CancelScope(shield=True):
            return await future
    finally:
        tokens.release_on_behalf_of(future)


# ── fork: the child starts empty ─────────────────────────────────────────────


def _forget_parent_threads() -> None:
    """In a forked child: the parent's workers and inboxes are not the child's."""
    global _pool, _local, _asyncio_inboxes_lock
    _pool.forked = True
    for worker in _pool.workers:  # their threads are gone, their eventfds are not
        fd, worker.fd = worker.fd, -1
        if fd >= 0:
            os.close(fd)
    _pool = _Pool(_pool.max_workers, _pool.idle_timeout)
    _local = _Local()
    _asyncio_inboxes.clear()
    _asyncio_inboxes_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_threads)
