"""A FastAPI-style background job, without FastAPI: POST /jobs starts an article
flow with run_background(); GET /jobs/{id} polls the RunHandle and the run
database from another thread while the job moves through its nodes."""

import threading

from pocoflow import Flow, Node, Store, WorkflowDB

DB = "jobs.db"
jobs = {}                       # job_id -> RunHandle, as a web app keeps them
gates = {}                      # node name -> Event the "LLM" waits on (test control)
entered = {}                    # node name -> Event set when its exec starts


def fake_llm(task):
    """Stands in for a slow LLM call; blocks until the test lets it answer."""
    node = task.split(":")[0]
    entered[node].set()
    gates[node].wait(timeout=10)
    return f"<{task}>"


class GenerateOutline(Node):
    def prep(self, store):
        return store["topic"]

    def exec(self, topic):
        return [f"{topic} basics", f"{topic} in practice"]

    def post(self, store, topic, sections):
        store["sections"] = sections
        store["progress"] = 33
        return "write"


class WriteContent(Node):
    max_retries = 2

    def prep(self, store):
        return store["sections"]

    def exec(self, sections):
        return [fake_llm(f"WriteContent:{s}") for s in sections]

    def post(self, store, sections, paragraphs):
        store["draft"] = "\n".join(paragraphs)
        store["progress"] = 66
        return "style"


class ApplyStyle(Node):
    def prep(self, store):
        return store["draft"]

    def exec(self, draft):
        return fake_llm(f"ApplyStyle:{len(draft)} chars")

    def post(self, store, draft, article):
        store["article"] = article
        store["progress"] = 100
        return "done"


def create_flow():
    outline, write, style = GenerateOutline(), WriteContent(), ApplyStyle()
    outline.then("write", write)
    write.then("style", style)
    return Flow(start=outline, db_path=DB, flow_name="article")


def start_job(topic):
    """POST /jobs"""
    store = Store(data={"topic": topic, "sections": [], "draft": "", "article": "",
                        "progress": 0}, name="article")
    handle = create_flow().run_background(store)
    jobs[handle.run_id] = (handle, store)
    return handle.run_id


def job_status(job_id):
    """GET /jobs/{job_id}: what a polling client sees."""
    handle, store = jobs[job_id]
    row = WorkflowDB(DB).get_run(job_id)
    return {"status": handle.status, "done": handle.is_done, "progress": store["progress"],
            "db_status": row["status"], "current_node": row["current_node"],
            "steps": row["total_steps"]}


def poll_from_another_thread(job_id, label):
    seen = []
    t = threading.Thread(target=lambda: seen.append(job_status(job_id)))
    t.start()
    t.join()
    print(f"{label}: {seen[0]}")


def main():
    for name in ("WriteContent", "ApplyStyle"):
        gates[name] = threading.Event()
        entered[name] = threading.Event()

    job_id = start_job("solar power")
    # Normalised: 0.2's run ids are '<flow>-<8 hex>', this build's are longer.
    print("job id starts with the flow name:", job_id.startswith("article-"))

    entered["WriteContent"].wait(10)
    poll_from_another_thread(job_id, "while writing")
    gates["WriteContent"].set()

    entered["ApplyStyle"].wait(10)
    poll_from_another_thread(job_id, "while styling")
    gates["ApplyStyle"].set()

    handle, _ = jobs[job_id]
    result = handle.wait(timeout=10)
    print("wait() returned the job's store:", result is jobs[job_id][1])
    poll_from_another_thread(job_id, "finished")
    print("article:", result["article"])
    print("draft:", result["draft"].replace("\n", " | "))

    db = WorkflowDB(DB)
    print("runs:", [(r["flow_name"], r["status"], r["total_steps"]) for r in db.list_runs()])
    print("events:", [(e["event"], e["node_name"]) for e in db.get_events(job_id)])
    print("checkpoint steps:", [c["step"] for c in db.get_checkpoints(job_id)])

    # a job with no database: the handle still knows its status
    plain = Flow(start=GenerateOutline()).run_background({"topic": "wind"})
    store = plain.wait(timeout=10)
    print("no-db job:", plain.status, plain.is_done, store["sections"])

    # wait() with a timeout that expires raises TimeoutError; the job goes on
    gates["WriteContent"].clear()
    entered["WriteContent"].clear()
    slow_id = start_job("tides")
    entered["WriteContent"].wait(10)
    try:
        jobs[slow_id][0].wait(timeout=0.05)
    except TimeoutError:
        print("wait(timeout) -> TimeoutError while", jobs[slow_id][0].status)
    gates["WriteContent"].set()
    print("then completes:", jobs[slow_id][0].wait(timeout=10)["progress"], jobs[slow_id][0].status)


if __name__ == "__main__":
    main()
