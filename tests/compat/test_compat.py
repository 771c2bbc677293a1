"""pocoflow 0.2 programs run unchanged: each program in ``programs/`` prints what it
printed under pocoflow 0.2.1 (``expected/<name>.txt``, recorded by
``record_expected.py``), exits the same way, and writes nothing new on stderr.

Where this build legitimately differs (longer run ids, ``cancelled`` for
``failed``, a dict written through), the program itself normalises its output and
says why in a comment. Where a 0.2 program would notice a difference kept on
purpose, the program is listed in ``BY_DESIGN`` with the reason
(docs/migrating-from-0.2.md tells users what to do), and its test asserts what
this build prints instead (``expected/<name>.by-design.txt``, recorded by
``record_expected.py --by-design``) and that it still differs from 0.2.1: a change
of behaviour either way fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import (
    REPO,
    by_design,
    by_design_stderr,
    expected,
    expected_stderr,
    program_names,
    run_program,
    warning_lines,
)

#: Programs that behave differently from 0.2.1 on purpose, and why
#: (docs/migrating-from-0.2.md says what to do instead).
BY_DESIGN = {
    "llm_private_stubs": "by design: 0.2's private names that tests patched are gone "
                         "(utils._global_llm, utils.time, UniversalLLMProvider."
                         "_create_openai_client, _make_call, _default_model, "
                         "_client_factories): they were never part of 0.2's public surface, "
                         "and the provider is built differently; tests use the supported "
                         "seams instead, client_factory= and sleep= on UniversalLLMProvider "
                         "and set_default_provider() for call_llm",
    "db_rows_raw": "by design: pf_events records more than 0.2 did (a node_retry row per "
                   "retry, a flow_end row after a node_error, the last action on flow_end) "
                   "so the monitor can show retries and how every run ended; a failed "
                   "run's total_steps counts its durable steps (0 here; 0.2: NULL); "
                   "store_json is compact JSON (0.2 put spaces after ':' and ','). Every "
                   "0.2 column keeps its name and meaning",
    "quirk_asyncio_in_sync_code": "by design: prep/post and hooks run on the engine's event "
                                  "loop thread (SPEC: the executor is async at its core), "
                                  "where asyncio.run() raises RuntimeError (a hook's error "
                                  "is only logged: its work does not happen); write the "
                                  "hook as an async def (it is awaited) or the node as an "
                                  "AsyncNode with prep_async, and await the coroutine",
    "quirk_fixed_run_id": "by design: a run id names one run (SPEC: a new run never reuses "
                          "an existing id), so running a Flow(run_id=...) again after a "
                          "failed attempt raises RunExistsError before any node runs; "
                          "continue the failed run with flow.resume(run_id), or give the "
                          "new attempt its own id. 0.2 ran it again under the same id",
    "quirk_llm_fallback_history": "by design: after a fallback provider answers, "
                                  "error_history holds every failed attempt, the failed "
                                  "providers' too, so a log shows why the primary was "
                                  "skipped (0.2: only the answering provider's)",
    "quirk_post_returns_none": "by design: post() returning None means 'default' (SPEC, "
                               "as in PocketFlow): hooks and pf_events say 'default' and a "
                               "'default' edge is followed; 0.2 passed None on and ended "
                               "the flow there. End a flow on purpose with a node that "
                               "has no edge for its action, or then(action, None)",
    "quirk_sqlite_tool": "by design: a sync exec runs in a worker thread (SPEC), so a "
                         "sqlite3 connection opened by the app on the main thread raises "
                         "sqlite3's own ProgrammingError ('SQLite objects created in a "
                         "thread can only be used in that same thread') inside exec; set "
                         "threaded = False on that node (its exec then runs on the thread "
                         "that runs the flow's loop: the caller's thread for flow.run() "
                         "in a script), or open the connection with "
                         "check_same_thread=False",
    "quirk_then_none_with_wildcard": "by design: then(action, None) is an explicit end of "
                                     "the flow and wins over a '*' edge (SPEC: 0.2's "
                                     "then(action, None) keeps working); 0.2 sent that "
                                     "action to the '*' edge by accident (its next_node "
                                     "took a None edge for a missing one)",
    "quirk_tuple_checkpoints": "by design: checkpoints never lose data silently (SPEC), so "
                               "tuples come back from checkpoints and snapshots as tuples "
                               "(the JSON holds {'__pf__': 'tuple', 'items': [...]}); 0.2 "
                               "wrote plain JSON lists and gave lists back. Compare with "
                               "list(value), or store lists",
}


def test_every_difference_names_a_program_and_says_why() -> None:
    """The by-design list only names programs that exist, each with its reason."""
    assert [] == sorted(set(BY_DESIGN) - set(program_names()))
    assert all(reason.startswith("by design: ") for reason in BY_DESIGN.values())


@pytest.mark.parametrize("name", [n for n in program_names() if n not in BY_DESIGN])
def test_program_behaves_as_under_021(name: str, tmp_path: Path) -> None:
    """The program prints what it printed under 0.2.1, exits the same, and adds
    nothing to stderr."""
    import sys

    outcome = run_program(sys.executable, name, tmp_path, str(REPO))

    assert expected(name) == outcome.recorded(), outcome.stderr
    old_lines = set(expected_stderr(name).splitlines())
    assert [] == [line for line in outcome.stderr.splitlines() if line not in old_lines]


@pytest.mark.parametrize("name", sorted(BY_DESIGN))
def test_a_difference_kept_by_design_is_exactly_the_documented_one(
        name: str, tmp_path: Path) -> None:
    """A program that behaves differently on purpose prints what this build is meant to
    print (expected/<name>.by-design.txt, its reason in BY_DESIGN), which is still not
    what 0.2.1 printed: a change either way shows here."""
    import sys

    outcome = run_program(sys.executable, name, tmp_path, str(REPO))

    assert by_design(name) == outcome.recorded(), outcome.stderr
    assert expected(name) != outcome.recorded()
    assert by_design_stderr(name) == warning_lines(outcome.stderr, expected_stderr(name))
