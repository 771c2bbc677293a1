"""SDK clients for ``UniversalLLMProvider``: built on first use, then reused.

Sync clients serve every thread (the SDKs' clients are thread-safe). Async
clients belong to the event loop they were first used on (their connection
pools do), so they are kept per loop in an anyio ``RunVar``, and built in a
worker thread, since importing an SDK and building a client take a while.
A built-in client is keyed by its settings, so a changed API key builds a new
one; a missing key or SDK raises ``LLMConfigurationError`` from here.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from pocoflow.llm.backends import backend_for

ClientFactory = Callable[[str, bool], Any]
"""``factory(provider, asynchronous)`` returns the client to use for ``provider``."""


class ClientPool:
    """The clients of one ``UniversalLLMProvider``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[tuple[Any, ...], Any] = {}
        self._per_loop: Any = None  # anyio RunVar: (anyio.Lock, {key: client}) of a loop

    def sync_client(self, provider: str, *, named: bool, factory: ClientFactory | None) -> Any:
        """The sync client of ``provider``, built on first use."""
        key, make = _recipe(provider, named, factory, asynchronous=False)
        with self._lock:
            client = self._sync.get(key)
        if client is None:
            client = make()
            with self._lock:
                client = self._sync.setdefault(key, client)
        return client

    async def async_client(
        self, provider: str, *, named: bool, factory: ClientFactory | None
    ) -> Any:
        """The async client of ``provider`` for the running loop, or None if it has
        none that works here (the caller then runs the sync client in a thread)."""
        import anyio
        from anyio.lowlevel import RunVar

        if backend_for(provider).asyncio_only and not _on_asyncio():
            return None
        key, make = _recipe(provider, named, factory, asynchronous=True)
        with self._lock:
            if self._per_loop is None:
                self._per_loop = RunVar(f"pocoflow.llm.clients.{id(self)}")
        state = self._per_loop.get(None)
        if state is None:
            state = (anyio.Lock(), {})
            self._per_loop.set(state)
        lock, clients = state
        if key not in clients:
            async with lock:  # concurrent first calls build one client, not one each
                if key not in clients:
                    clients[key] = await anyio.to_thread.run_sync(make)
        return clients[key]


def _recipe(
    provider: str, named: bool, factory: ClientFactory | None, *, asynchronous: bool
) -> tuple[tuple[Any, ...], Callable[[], Any]]:
    """A cache key for the client, and how to build it (a missing key raises here)."""
    backend = backend_for(provider)
    if factory is not None:
        return (provider, asynchronous), partial(factory, provider, asynchronous)
    settings = backend.settings(named=named)
    return (
        (provider, asynchronous, *sorted(settings.items())),
        partial(backend.client, settings, asynchronous=asynchronous),
    )


def _on_asyncio() -> bool:
    """True when the calling code runs on an asyncio event loop (not trio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
