"""Structured output: the LLM must answer in YAML; exec raises when the YAML is bad,
and max_retries/retry_delay make PocoFlow ask again. A parser that never gets good
YAML fails the flow, which the node_error hook and the run database both report."""

import time

from pocoflow import Flow, Node, Store, WorkflowDB

REPLIES = [
    "Sure! Here is the data you asked for: name Jane, email jane@example.com",
    "```yaml\nname: Jane Doe\nexperience: 5\n```",
    "```yaml\nname: Jane Doe\nemail: jane@example.com\nexperience: 5\nskills: python, sql\n```",
]
attempts = []


def fake_llm(prompt, replies):
    attempts.append(len(attempts) + 1)
    return replies[min(len(attempts) - 1, len(replies) - 1)]


def parse_yaml(text):
    """The flat subset of YAML the prompt asks for (no PyYAML needed)."""
    block = text.split("```yaml")[1].split("```")[0]
    data = {}
    for line in block.strip().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a key: value line: {line!r}")
        value = value.strip()
        data[key.strip()] = int(value) if value.isdigit() else value
    return data


class ResumeParserNode(Node):
    max_retries = 3
    retry_delay = 0.05
    replies = tuple(REPLIES)

    def prep(self, store):
        return store["resume_text"]

    def exec(self, resume_text):
        reply = fake_llm(f"Extract name, email, experience as YAML:\n{resume_text}", self.replies)
        result = parse_yaml(reply)  # IndexError when there is no ```yaml block
        assert "name" in result, "Missing 'name'"
        assert "email" in result, "Missing 'email'"
        assert isinstance(result["experience"], int), "'experience' is not an integer"
        return result

    def post(self, store, prep_res, result):
        store["structured"] = result
        return "done"


class StubbornParserNode(ResumeParserNode):
    max_retries = 2
    retry_delay = 0.01
    replies = ("```yaml\nname: Jane Doe\n```",)


def main():
    store = Store(data={"resume_text": "Jane Doe, jane@example.com, 5 years", "structured": {}},
                  name="resume_parser")
    flow = Flow(start=ResumeParserNode(), db_path="parse.db", flow_name="parse_resume")
    errors = []
    flow.on("node_error", lambda name, exc, store: errors.append((name, type(exc).__name__)))
    started = time.monotonic()
    flow.run(store)
    waited = time.monotonic() - started
    print("attempts:", attempts)
    print("waited at least two retry delays:", waited >= 0.1)
    print("structured:", store["structured"])
    print("node_error fired:", errors)

    attempts.clear()
    failing = Flow(start=StubbornParserNode(), db_path="parse.db", flow_name="parse_stubborn")
    failing.on("node_error", lambda name, exc, store: print(f"node_error hook: {name}: {exc}"))
    failing.on("flow_end", lambda steps, store: print("flow_end must not fire on failure"))
    try:
        failing.run(Store(data={"resume_text": "?", "structured": {}}))
    except AssertionError as exc:
        print("flow raised AssertionError:", exc)
    print("attempts:", attempts)

    db = WorkflowDB("parse.db")
    for run in sorted(db.list_runs(), key=lambda r: r["flow_name"]):
        print(run["flow_name"], run["status"], run["error_msg"])
        # Normalised: only the node events are printed. This build also logs each
        # retry (node_retry) and a flow_end after a failure, and counts 0 steps where
        # 0.2 left total_steps NULL: see db_rows_raw.py, which shows them raw.
        events = [e for e in db.get_events(run["run_id"])
                  if e["event"] in ("node_start", "node_end", "node_error")]
        print("  node events:", [(e["event"], e["node_name"], e["error_msg"]) for e in events])


if __name__ == "__main__":
    main()
