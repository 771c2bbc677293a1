"""Settings read from the environment, and the optional ``.env`` file."""

from __future__ import annotations

import math
import os

from pocoflow.llm.errors import LLMConfigurationError

_env_file = {"loaded": False}


def load_env_file() -> None:
    """Load the nearest ``.env`` (working directory, then its parents) once per process.

    Only if python-dotenv is installed; variables already in the environment win.
    Nothing happens at ``import pocoflow``: the first ``UniversalLLMProvider``
    (and the pocoflow 0.2 module ``pocoflow.utils``) calls this.
    """
    if _env_file["loaded"]:
        return
    _env_file["loaded"] = True
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        return
    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)


def number_setting(variable: str, default: float, *, minimum: float = 0) -> float:
    """The number in environment ``variable`` (``default`` if unset or empty), of the
    type of ``default``; anything else raises an error naming the variable."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        value = None
    if value is None or not value >= minimum or value == math.inf:  # NaN fails >=
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise LLMConfigurationError(f"{variable} must be {kind} >= {minimum}, got {raw!r}.")
    return value
