"""Nodes: the ``prep | exec | post`` units of a flow, and their retry policy.

``prep(store)`` reads, ``exec(prep_result)`` does the work without touching
the store (so it is pure and retryable), ``post(store, prep_result,
exec_result)`` writes back and returns the action that picks the next node
(parameter names as in pocoflow 0.2, for callers that pass them by keyword). Nodes are
configuration: nothing about a run is kept on them, so one node object may
serve many runs at once. The engine (``pocoflow.engine``) executes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

from pocoflow.errors import FlowConfigError
from pocoflow.logging import get_logger

_log = get_logger("node")

DEFAULT_ACTION = "default"
WILDCARD_ACTION = "*"
_NO_EDGES: Mapping[str, Any] = MappingProxyType({})
_CO_COROUTINE = 0x80

_CONFIG_ATTRS = ("max_retries", "retry_delay", "retry_backoff", "retry_on", "timeout", "threaded")


def is_coroutine_function(fn: Any) -> bool:
    """True for ``async def`` functions and methods (cheaper than importing inspect)."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


class Plan(NamedTuple):
    """Which method the engine calls for each phase of a node class, and whether
    to await it; worked out once per class so a step does no introspection."""

    prep: str
    prep_await: bool
    exec: str
    exec_await: bool
    post: str
    post_await: bool
    fallback: str
    fallback_await: bool
    batch: bool
    concurrent: bool  # AsyncBatchNode: items run at once, up to max_concurrency
    custom_run: bool  # the class overrides pocoflow 0.2's Node._run (tracing, timing)


def _overrides(cls: type, name: str, base: type) -> bool:
    return getattr(cls, name) is not getattr(base, name)


def _plan_for(cls: type) -> Plan:
    """Read which phases are async and whether the class is a batch node."""
    ours = {b.__name__: b for b in cls.__mro__ if b.__module__ == __name__}
    async_base = ours.get("AsyncNode")
    batch = "BatchNode" in ours or "AsyncBatchNode" in ours

    def pick(sync_name: str, async_name: str) -> tuple[str, bool]:
        if async_base is not None and _overrides(cls, async_name, async_base):
            return async_name, True
        return sync_name, is_coroutine_function(getattr(cls, sync_name))

    prep = pick("prep", "prep_async")
    post = pick("post", "post_async")
    fallback = pick("exec_fallback", "exec_fallback_async")
    if async_base is not None and (
        _overrides(cls, "exec_async", async_base) or not _overrides(cls, "exec", async_base)
    ):
        exec_ = ("exec_async", True)
    else:
        exec_ = ("exec", is_coroutine_function(cls.exec))  # type: ignore[attr-defined]
    custom_run = _overrides(cls, "_run", ours["Node"])
    return Plan(
        *prep, *exec_, *post, *fallback, batch, async_base is not None and batch, custom_run
    )


class GraphEdits:
    """Counts edits to any graph (an edge set, a node renamed): what is worked out from
    a graph once (``pocoflow.graph.graph_data``) is stale once the count moves."""

    count = 0


class Wired:
    """Edges and a name: what every step of a graph (a node or a nested Flow) has.

    Nothing here is set in ``__init__``, so subclasses that define their own
    ``__init__`` without calling ``super().__init__()`` still work.
    """

    _successors: Mapping[str, Wired | None] = _NO_EDGES

    @property
    def name(self) -> str:
        """The node's label in events, logs and the monitor (default: its class name)."""
        return self.__dict__.get("_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError(f"A node name must be a non-empty str, got {value!r}.")
        self.__dict__["_name"] = value
        GraphEdits.count += 1

    @property
    def successors(self) -> dict[str, Wired | None]:
        """A copy of this node's edges: action → next node (None: the flow ends)."""
        return dict(self._successors)

    def then(self, action: str, node: Wired | None) -> Wired:
        """Go to *node* when ``post`` returns *action*; ``"*"`` matches any other action.

        ``node=None`` ends the flow on *action* (pocoflow 0.2's explicit end),
        even when a ``"*"`` edge exists. Returns ``self`` so edges chain:
        ``a.then("ok", b).then("error", c)``. Setting an action's edge again
        replaces it and logs a WARNING on ``pocoflow.node``, as 0.2 did.
        """
        if isinstance(action, Wired) and isinstance(node, str):
            raise TypeError(
                f"Node '{self.name}': then() takes the action first, then the node: "
                f"{_var(self)}.then({node!r}, {_var(action)})."
            )
        if not isinstance(action, str) or not action:
            raise TypeError(
                f"Node '{self.name}': the action of an edge must be a non-empty str, got "
                f"{action!r} ({type(action).__name__}). "
                f"Example: {_var(self)}.then('done', next_node)."
            )
        if node is not None and not isinstance(node, Wired):
            raise TypeError(
                f"Node '{self.name}': then({action!r}, ...) needs a Node, AsyncNode, batch "
                f"node or Flow (or None to end the flow there), got {type(node).__name__}. "
                f"Pass a node instance, e.g. {_var(self)}.then({action!r}, NextNode())."
            )
        edges = self.__dict__.get("_successors")
        if edges is None:
            edges = self.__dict__["_successors"] = {}
        if action in edges:  # logged, as in 0.2 (web apps re-wire their graph per request)
            old = edges[action]
            if old is node:
                _log.warning(
                    "Node '%s': the edge for action %r to %s is set again (unchanged).",
                    self.name,
                    action,
                    _target_name(node),
                )
            else:
                _log.warning(
                    "Node '%s': the edge for action %r to %s is replaced by an edge to %s.",
                    self.name,
                    action,
                    _target_name(old),
                    _target_name(node),
                )
        edges[action] = node
        GraphEdits.count += 1
        return self

    def next_node(self, action: str | None) -> Wired | None:
        """The node that follows *action* (``None`` means ``"default"``), or None to end."""
        edges = self._successors
        if not edges:
            return None
        action = DEFAULT_ACTION if action is None else action
        found = edges.get(action)
        if found is None and action not in edges:
            found = edges.get(WILDCARD_ACTION)
        return found

    def ends_on(self, action: str) -> bool:
        """True if *action* ends the flow because no edge matches it (not an explicit
        ``then(action, None)``, and not a node without edges)."""
        edges = self._successors
        return bool(edges) and action not in edges and WILDCARD_ACTION not in edges


class _ClassAttributeName:
    """A plain class attribute ``name`` on a Node subclass (agent programs give tools a
    ``name`` for the LLM): the class keeps its value (``WeatherTool.name`` is still
    ``"get_weather"``), while the node's own name stays what pocoflow 0.2's
    ``Node.__init__`` made it, the class name, unless set with ``Node(name=...)`` or
    ``self.name = ...``. Hooks, run records and checkpoint files use the node's name.
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def __get__(self, node: Any, owner: type | None = None) -> Any:
        if node is None:
            return self.value
        return Wired.name.fget(node)  # type: ignore[attr-defined]

    def __set__(self, node: Any, value: str) -> None:
        Wired.name.fset(node, value)  # type: ignore[attr-defined]


class Node(Wired):
    """A synchronous node: ``exec`` runs in a worker thread, ``prep``/``post`` on the loop.

    Class attributes (or keyword arguments) configure it:
    ``max_retries`` total attempts of exec (1 = no retry); ``retry_delay``
    seconds before the first retry, multiplied by ``retry_backoff`` after each;
    ``retry_on`` exception types worth retrying; ``timeout`` seconds per attempt;
    ``threaded = False`` runs a trivial, CPU-only exec inline on the loop thread
    to save the thread hop (about 75 µs).
    """

    max_retries: int = 1
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    threaded: bool = True

    _plan: ClassVar[Plan]

    def __init__(self, *, name: str | None = None, **config: Any) -> None:
        if name is not None:
            self.name = name
        for key, value in config.items():
            if key not in self._config_attrs():
                raise TypeError(
                    f"{type(self).__name__}() got an unknown option {key!r}; options are "
                    f"{sorted(self._config_attrs())}."
                )
            setattr(self, key, value)

    @classmethod
    def _config_attrs(cls) -> tuple[str, ...]:
        return _CONFIG_ATTRS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and not hasattr(cls.__dict__["name"], "__get__"):
            cls.name = _ClassAttributeName(cls.__dict__["name"])  # type: ignore[assignment]
        cls._plan = _plan_for(cls)

    # ── the three phases (all optional) ─────────────────────────────────────

    def prep(self, store: Any) -> Any:
        """Extract: read what exec needs from the store."""
        return None

    def exec(self, prep_result: Any) -> Any:
        """Transform: do the work. Must not touch the store; may be retried."""
        return None

    def post(self, store: Any, prep_result: Any, exec_result: Any) -> str | None:
        """Load and route: write results, return the next action (None = "default")."""
        return DEFAULT_ACTION

    def exec_fallback(self, prep_result: Any, exc: Exception) -> Any:
        """Called when exec gives up; its return value becomes the exec result.

        The default re-raises *exc*, which fails the node.
        """
        raise exc

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _run(self, store: Any) -> str:
        """prep → exec (with retries) → post, blocking; returns the action.

        pocoflow 0.2 programs override it to time or trace a node and call
        ``super()._run(store)``; the engine honours such an override by calling
        it in a worker thread, and this base version hands the phases back to
        the run's event loop (prep and post still run on the loop thread).
        Called outside a run (a unit test of one node), it runs the node alone.
        """
        from pocoflow.bridge import run_node

        return run_node(self, store)

    def check_config(self) -> None:
        """Raise FlowConfigError if the retry policy cannot work; the engine calls
        it for every reachable node before a run starts."""
        cls = type(self).__name__
        retries = self.max_retries
        if not _is_number(retries) or not isinstance(retries, int) or retries < 1:
            raise FlowConfigError(
                f"Node '{self.name}': max_retries must be an int >= 1 (total attempts), got "
                f"{retries!r}. Example: {cls}.max_retries = 3 for three attempts."
            )
        if not _is_number(self.retry_delay) or not 0 <= self.retry_delay < math.inf:
            raise FlowConfigError(
                f"Node '{self.name}': retry_delay must be a finite number of seconds >= 0, got "
                f"{self.retry_delay!r}."
            )
        if not _is_number(self.retry_backoff) or not 0 < self.retry_backoff < math.inf:
            raise FlowConfigError(
                f"Node '{self.name}': retry_backoff must be a finite multiplier > 0 (2 doubles the "
                f"delay after each retry), got {self.retry_backoff!r}."
            )
        types = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not types or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in types
        ):
            raise FlowConfigError(
                f"Node '{self.name}': retry_on must be an exception class or a tuple of them, "
                f"got {self.retry_on!r}. Example: retry_on = (TimeoutError, ConnectionError)."
            )
        if self.timeout is not None and (not _is_number(self.timeout) or not self.timeout > 0):
            raise FlowConfigError(
                f"Node '{self.name}': timeout must be None or seconds > 0, got {self.timeout!r}."
            )


class AsyncNode(Node):
    """A node whose ``exec_async`` is awaited on the running event loop.

    ``prep_async``/``post_async`` may replace ``prep``/``post``, and
    ``exec_fallback_async`` may replace ``exec_fallback``. Because it runs on
    the caller's loop, a client created before the run keeps working.
    """

    async def prep_async(self, store: Any) -> Any:
        """Async Extract; by default the sync ``prep`` is used instead."""
        return self.prep(store)

    async def exec_async(self, prep_result: Any) -> Any:
        """Async Transform: await your I/O here."""
        return None

    def exec(self, prep_result: Any) -> Any:
        """Run :meth:`exec_async` to completion and return its result (pocoflow 0.2).

        For calling a node's exec directly, e.g. in a unit test; it works with or
        without an event loop running in the calling thread. A run never calls
        it: the engine awaits ``exec_async`` on the run's own loop (unless a
        subclass overrides ``exec`` and not ``exec_async``).
        """
        from pocoflow.bridge import run_sync

        return run_sync(self.exec_async, prep_result)

    async def post_async(self, store: Any, prep_result: Any, exec_result: Any) -> str | None:
        """Async Load and route; by default the sync ``post`` is used instead."""
        return self.post(store, prep_result, exec_result)

    async def exec_fallback_async(self, prep_result: Any, exc: Exception) -> Any:
        """Async fallback; by default the sync ``exec_fallback`` is used instead."""
        return self.exec_fallback(prep_result, exc)


class BatchNode(Node):
    """``prep`` returns items, ``exec`` runs once per item (retried per item),
    ``post`` receives the results in item order."""


class AsyncBatchNode(AsyncNode):
    """Like BatchNode, with ``exec_async`` run for all items at once, at most
    ``max_concurrency`` at a time (None: no limit)."""

    max_concurrency: int | None = None

    def check_config(self) -> None:
        super().check_config()
        limit = self.max_concurrency
        if limit is not None and (not _is_number(limit) or not isinstance(limit, int) or limit < 1):
            raise FlowConfigError(
                f"Node '{self.name}': max_concurrency must be None (no limit) or an int >= 1, "
                f"got {limit!r}."
            )

    @classmethod
    def _config_attrs(cls) -> tuple[str, ...]:
        return (*_CONFIG_ATTRS, "max_concurrency")


Node._plan = _plan_for(Node)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _target_name(node: Wired | None) -> str:
    return "the end of the flow" if node is None else f"'{node.name}'"


def _var(node: Any) -> str:
    """A plausible variable name for examples in error messages."""
    name = getattr(node, "name", type(node).__name__)
    return name[:1].lower() + name[1:] if isinstance(name, str) and name else "node"
