"""Writes the methods of ``WorkflowDB`` and ``AsyncWorkflowDB`` from ``RunRecords``.

The facades only delegate, so their methods are generated (between marker
lines in ``pocoflow/db.py``) from the one implementation's signatures and
docstrings: a facade can never lack a method or drift in a signature, and
type checkers and editors still see ordinary code. After changing
``RunRecords.API`` or a signature, run ``python -m pocoflow.persistence.facades``;
a test fails while the generated code is out of date.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from pocoflow.persistence.records import API, RunRecords

BEGIN = "    # ── generated from RunRecords by pocoflow.persistence.facades: do not edit ──"
END = "    # ── end of generated methods ──"
TARGET = Path(__file__).resolve().parents[1] / "db.py"


def _parameters(signature: inspect.Signature) -> tuple[list[str], list[str]]:
    """The parameter list and the call's argument list, ``self`` left out."""
    declared, passed = ["self"], []
    star_done = False
    for param in list(signature.parameters.values())[1:]:
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {param.annotation}"
        if param.default is not inspect.Parameter.empty:
            default = param.default
            shown = json.dumps(default) if isinstance(default, str) else repr(default)
            text += f" = {shown}" if ":" in text else f"={shown}"
        if param.kind is param.KEYWORD_ONLY:
            if not star_done:
                declared.append("*")
                star_done = True
            passed.append(f"{param.name}={param.name}")
        elif param.kind is param.VAR_KEYWORD:
            text = "**" + text
            passed.append(f"**{param.name}")
        elif param.kind is param.VAR_POSITIONAL:
            text = "*" + text
            star_done = True
            passed.append(f"*{param.name}")
        else:
            passed.append(param.name)
        declared.append(text)
    return declared, passed


def _wrapped(head: str, items: list[str], tail: str) -> list[str]:
    """``head(items)tail`` on one line, or one item per line if that passes 100 columns."""
    line = f"{head}{', '.join(items)}{tail}"
    if len(line) <= 100:
        return [line]
    indent = " " * (len(head) - len(head.lstrip()) + 4)
    return [head, *[f"{indent}{item}," for item in items], f"{indent[:-4]}{tail}"]


def _doc(text: str | None) -> list[str]:
    lines = inspect.cleandoc(text or "").splitlines() or [""]
    if len(lines) == 1:
        return [f'        """{lines[0]}"""']
    return [
        f'        """{lines[0]}',
        *[f"        {line}".rstrip() for line in lines[1:]],
        '        """',
    ]


def methods(asynchronous: bool) -> str:
    """The generated block of one facade."""
    out = [BEGIN]
    for name in API:
        method = getattr(RunRecords, name)
        signature = inspect.signature(method)
        declared, passed = _parameters(signature)
        returns = signature.return_annotation
        arrow = f" -> {returns}" if returns is not inspect.Signature.empty else ""
        out.append("")
        if asynchronous:
            out += _wrapped(f"    async def {name}(", declared, f"){arrow}:")
            out += _doc(method.__doc__)
            out += _wrapped(
                "        return await self._call(", [f"self.records.{name}", *passed], ")"
            )
        else:
            out += _wrapped(f"    def {name}(", declared, f"){arrow}:")
            out += _doc(method.__doc__)
            out += _wrapped(f"        return self.records.{name}(", passed, ")")
    out.append(END)
    return "\n".join(out)


def render(source: str) -> str:
    """*source* (db.py) with both generated blocks written afresh, in class order."""
    parts = source.split(BEGIN)
    if len(parts) != 3:
        raise ValueError(f"{TARGET} must hold two generated blocks starting with {BEGIN!r}.")
    head, first, second = parts
    first_tail = first.split(END, 1)[1]
    second_tail = second.split(END, 1)[1]
    is_async_first = head.rfind("class AsyncWorkflowDB") > head.rfind("class WorkflowDB")
    return head + methods(is_async_first) + first_tail + methods(not is_async_first) + second_tail


def main() -> int:
    source = TARGET.read_text(encoding="utf-8")
    fresh = render(source)
    if fresh != source:
        TARGET.write_text(fresh, encoding="utf-8")
        print(f"rewrote the generated methods in {TARGET}")
    else:
        print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
