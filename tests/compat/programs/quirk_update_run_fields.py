"""A custom runner passes its own bookkeeping to WorkflowDB.update_run along with
the columns 0.2 knows (0.2 kept the allowed fields and ignored the rest)."""

from pocoflow import WorkflowDB


def main():
    db = WorkflowDB("runs.db")
    db.create_run("nightly-1", flow_name="nightly")
    try:
        db.update_run("nightly-1", status="completed", total_steps=4, worker="host-3",
                      retries=0)
        print("update_run accepted the call")
    except TypeError as exc:
        print("update_run raised TypeError:", "worker" in str(exc))
    row = db.get_run("nightly-1")
    print(row["status"], row["total_steps"])


if __name__ == "__main__":
    main()
