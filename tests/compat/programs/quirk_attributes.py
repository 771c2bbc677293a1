"""Attributes 0.2 programs read after starting work: WorkflowDB.db_path (shown in
a status line), and Flow.run_id, which run_background() fixed on the Flow."""

from pocoflow import Flow, Node, Store, WorkflowDB


class Work(Node):
    def exec(self, prep_res):
        return "ok"


def main():
    db = WorkflowDB("state/runs.db")
    print("using database", db.db_path)
    flow = Flow(start=Work(), db_path="state/runs.db", flow_name="work")
    handle = flow.run_background(Store())
    handle.wait(timeout=10)
    print("flow.run_id is the handle's:", flow.run_id == handle.run_id)
    print("row found through flow.run_id:", db.get_run(flow.run_id) is not None)


if __name__ == "__main__":
    main()
