"""The errors of the LLM helpers, under ``PocoFlowError``::

    PocoFlowError
    └── LLMError
        ├── LLMConfigurationError (ValueError)  a provider that cannot be used as configured
        │   ├── MissingAPIKeyError              its API key environment variable is empty
        │   └── MissingSDKError (ImportError)   its SDK is not installed
        └── LLMCallError (RuntimeError)         call_llm / acall_llm: every provider failed

They keep the built-in types pocoflow 0.2 raised: a missing key was a
``ValueError``, a missing SDK an ``ImportError``, and a failed ``call_llm`` a
``RuntimeError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow.errors import PocoFlowError

if TYPE_CHECKING:
    from pocoflow.llm.response import LLMResponse


class LLMError(PocoFlowError):
    """Base class of the errors raised by ``pocoflow.llm``."""


class LLMConfigurationError(LLMError, ValueError):
    """A provider cannot be used as configured: no API key, no SDK, an unknown name.

    A provider with such a problem is not retried: the call moves on to the next
    provider and the error is recorded in ``LLMResponse.error_history``. When no
    provider of the chain could be used at all, the call raises this error (or,
    for a chain of one provider, that provider's own error).
    ``error_history`` holds the entries of every provider that was skipped.
    """

    def __init__(self, message: str, *, error_history: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.error_history = error_history or []


class MissingAPIKeyError(LLMConfigurationError):
    """The environment variable holding a provider's API key is not set."""

    def __init__(self, provider: str, variable: str) -> None:
        super().__init__(
            f"The {provider!r} LLM provider needs an API key, but {variable} is not set. "
            f"Set it in the environment (or in a .env file with python-dotenv installed)."
        )
        self.provider = provider
        self.variable = variable


class MissingSDKError(LLMConfigurationError, ImportError):
    """The Python package a provider talks through is not installed."""

    def __init__(self, provider: str, package: str) -> None:
        super().__init__(
            f"The {provider!r} LLM provider needs the {package} package, which is not "
            f"installed. Install it with: pip install 'pocoflow[llm]' (or: pip install {package})."
        )
        self.provider = provider
        self.package = package


class LLMCallError(LLMError, RuntimeError):
    """Every provider failed; ``response`` is the failed ``LLMResponse``."""

    def __init__(self, message: str, response: LLMResponse) -> None:
        super().__init__(message)
        self.response = response
