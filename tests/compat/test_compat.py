"""pocoflow 0.2 programs run unchanged: each program in ``programs/`` prints what it
printed under pocoflow 0.2.1 (``expected/<name>.txt``, recorded by
``record_expected.py``), exits the same way, and writes nothing new on stderr.

Where this build legitimately differs (longer run ids, ``cancelled`` for
``failed``, a dict written through), the program itself normalises its output and
says why in a comment. Where a 0.2 program would notice a difference, the test is
a strict xfail naming it: fix the library, and the xfail turns into a failure
that asks for the marker to go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import REPO, expected, expected_stderr, program_names, run_program

XFAIL = {
    # ── programs written as 0.2 users write them ──
    "llm_private_stubs": "the names of 0.2's pocoflow/utils.py that tests patch are gone: "
                         "utils._global_llm (ignored by call_llm), utils.time, "
                         "UniversalLLMProvider._create_openai_client, _make_call, "
                         "_default_model, _client_factories",
    "db_rows_raw": "pf_events gets rows 0.2 never wrote (node_retry per retry; flow_end "
                   "after a node_error), flow_end rows carry the last action, a failed "
                   "run's total_steps is 0 (0.2: NULL), store_json has no spaces",
    # ── one difference each ──
    "quirk_asyncio_in_sync_code": "prep/post and hooks run on the engine's event loop "
                                  "thread, so asyncio.run() there raises RuntimeError (a "
                                  "hook's error is only logged: its work silently does "
                                  "not happen)",
    "quirk_fixed_run_id": "running a Flow(run_id=...) again after a failed attempt raises "
                          "RunExistsError before any node runs; 0.2 ran it again under the "
                          "same id",
    "quirk_llm_fallback_history": "after a fallback provider answers, error_history also "
                                  "holds the failed providers' errors (0.2: only the "
                                  "answering provider's)",
    "quirk_post_returns_none": "post() returning None means 'default' (hooks and pf_events "
                               "say 'default' and a 'default' edge is followed); 0.2 passed "
                               "None on and ended the flow there",
    "quirk_sqlite_tool": "exec runs in a worker thread, so a sqlite3 connection opened by "
                         "the app raises ProgrammingError inside exec",
    "quirk_then_none_with_wildcard": "then(action, None) now ends the flow even when a '*' "
                                     "edge exists; 0.2 sent that action to the '*' edge",
    "quirk_tuple_checkpoints": "tuples come back from checkpoints and snapshots as tuples "
                               "and the JSON files hold {'__pf__': 'tuple'} objects; 0.2 "
                               "wrote plain JSON lists and gave lists back",
}


def _cases() -> list[object]:
    return [pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=True,
                                                                  reason=XFAIL[name])]
                         if name in XFAIL else []) for name in program_names()]


def test_every_xfail_names_a_program() -> None:
    """The xfail list only names programs that exist."""
    assert [] == sorted(set(XFAIL) - set(program_names()))


@pytest.mark.parametrize("name", _cases())
def test_program_behaves_as_under_021(name: str, tmp_path: Path) -> None:
    """The program prints what it printed under 0.2.1, exits the same, and adds
    nothing to stderr."""
    import sys

    outcome = run_program(sys.executable, name, tmp_path, str(REPO))

    assert expected(name) == outcome.recorded(), outcome.stderr
    old_lines = set(expected_stderr(name).splitlines())
    assert [] == [line for line in outcome.stderr.splitlines() if line not in old_lines]
