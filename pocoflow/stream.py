"""``Flow.stream``: run a flow in a task and hand its events to an ``async for``."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from pocoflow.engine import execute, first_error
from pocoflow.events import Event
from pocoflow.sinks import StreamSink

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from pocoflow.flow import Flow
    from pocoflow.graph import Start


async def stream_events(flow: Flow, store: Any, start: Start | None) -> AsyncIterator[Event]:
    """Yield every event of the run, the last ``flow_end`` included; then re-raise the
    run's error, if any. Leaving the loop early (``aclose``) cancels the run."""
    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
    errors: list[BaseException] = []

    async def produce() -> None:
        async with send:
            try:
                await execute(flow, store, start=start, sinks=[StreamSink(send)])
            except Exception as exc:  # delivered after the last event
                errors.append(exc)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            async with receive:
                async for event in receive:
                    yield event
    except BaseExceptionGroup as group_error:  # GeneratorExit from aclose(), or a cancel
        raise first_error(group_error) from None
    if errors:
        raise errors[0]
