"""``LLMResponse``: what one ``UniversalLLMProvider.call`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LLMResponse:
    """The outcome of one call, with the fields of pocoflow 0.2.

    ``content`` the reply text ("" when the call failed); ``success`` whether a
    provider answered; ``provider`` the one that did (``"all_failed"`` when none
    did); ``model`` the model that answered (on failure, the model asked for or
    ``"unknown"``); ``attempts`` on success the attempts made at the provider that
    answered, on failure the number of failed attempts in ``error_history``;
    ``total_time`` seconds the whole call took; ``error_history`` one dict per
    failed attempt, oldest first, across every provider tried (``None`` when the
    first attempt succeeded). Each entry has the keys ``provider``, ``model``,
    ``attempt``, ``error``, ``error_type`` and ``timestamp`` (``time.time()``).
    """

    content: str
    success: bool
    provider: str
    model: str
    attempts: int
    total_time: float
    error_history: list[dict[str, Any]] | None = None
