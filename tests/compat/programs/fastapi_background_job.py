"""A real FastAPI app, driven through its TestClient: POST /jobs starts an article
flow with run_background() and returns its id; GET /jobs/{id} (an async endpoint,
on the server's event loop) reports progress from the store, the RunHandle and the
run database while the job moves through its nodes; POST /jobs/{id}/cancel stops
one before its next node."""

import threading
import warnings

from fastapi import FastAPI, HTTPException

with warnings.catch_warnings():  # newer Starlette asks for httpx2; not this program's concern
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from pocoflow import Flow, Node, Store, WorkflowDB

DB = "fastapi_jobs.db"
app = FastAPI()
db = None                       # the app's WorkflowDB, opened once at start-up
jobs = {}                       # job_id -> (RunHandle, Store)
gates = {}                      # node name -> Event the "LLM" waits on (test control)
entered = {}                    # node name -> Event set when its exec starts


def fake_llm(task):
    """Stands in for a slow LLM call; blocks until the test lets it answer."""
    node = task.split(":")[0]
    entered[node].set()
    gates[node].wait(timeout=10)
    return f"<{task}>"


class Outline(Node):
    def prep(self, store):
        return store["topic"]

    def exec(self, topic):
        return [f"{topic} basics", f"{topic} today"]

    def post(self, store, topic, sections):
        store["sections"] = sections
        store["progress"] = 50
        return "write"


class Write(Node):
    def prep(self, store):
        return store["sections"]

    def exec(self, sections):
        return " / ".join(fake_llm(f"Write:{s}") for s in sections)

    def post(self, store, sections, text):
        store["article"] = text
        store["progress"] = 90
        return "publish"


class Publish(Node):
    def exec(self, prep_res):  # 0.2's Node declares exec abstract
        return None

    def post(self, store, prep_res, exec_res):
        store["published"] = True
        store["progress"] = 100


def article_flow():
    outline, write, publish = Outline(), Write(), Publish()
    outline.then("write", write)
    write.then("publish", publish)
    return Flow(start=outline, db_path=DB, flow_name="article")


@app.post("/jobs")
def create_job(topic: str):
    store = Store(data={"topic": topic, "progress": 0}, name="article")
    handle = article_flow().run_background(store)
    jobs[handle.run_id] = (handle, store)
    return {"job_id": handle.run_id}


@app.get("/jobs/{job_id}")
async def job_status(job_id: str):
    if job_id not in jobs:
        raise HTTPException(status_code=404, detail="no such job")
    handle, store = jobs[job_id]
    row = db.get_run(job_id)
    return {"status": handle.status, "done": handle.is_done, "progress": store["progress"],
            "db_status": row["status"], "current_node": row["current_node"]}


@app.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str):
    handle, _ = jobs[job_id]
    handle.cancel()
    return {"cancelled": True}


def main():
    global db
    db = WorkflowDB(DB)
    for name in ("Write",):
        gates[name] = threading.Event()
        entered[name] = threading.Event()
    client = TestClient(app)

    job_id = client.post("/jobs", params={"topic": "tides"}).json()["job_id"]
    # Normalised: 0.2's run ids are '<flow>-<8 hex>', this build's are longer.
    print("job id starts with the flow name:", job_id.startswith("article-"))
    entered["Write"].wait(10)
    print("while writing:", client.get(f"/jobs/{job_id}").json())
    gates["Write"].set()
    handle, store = jobs[job_id]
    handle.wait(timeout=10)
    print("finished:", client.get(f"/jobs/{job_id}").json())
    print("article:", store["article"])
    print("unknown job:", client.get("/jobs/nope").status_code)

    gates["Write"].clear()
    entered["Write"].clear()
    slow_id = client.post("/jobs", params={"topic": "wind"}).json()["job_id"]
    entered["Write"].wait(10)
    print("cancel:", client.post(f"/jobs/{slow_id}/cancel").json())
    gates["Write"].set()
    slow, _ = jobs[slow_id]
    try:
        slow.wait(timeout=10)
    except Exception as exc:  # what wait() does with a cancelled job
        print("wait() on a cancelled job:", type(exc).__name__)
    # Normalised: 0.2 reported and recorded a cancelled run as 'failed' with error
    # 'cancelled'; this build says 'cancelled' (error_msg is still 'cancelled').
    row = db.get_run(slow_id)
    print("cancelled job:", slow.status in ("failed", "cancelled"), row["error_msg"],
          row["status"] in ("failed", "cancelled"), "published" in jobs[slow_id][1])
    print("runs:", sorted((r["flow_name"], r["total_steps"]) for r in db.list_runs()))


if __name__ == "__main__":
    main()
