"""Tool nodes describe themselves to the LLM with class attributes `name` and
`description` (0.2's Node.__init__ set self.name to the class name, so hooks, the
run database and checkpoint files kept using the class name)."""

import os

from pocoflow import Flow, Node, Store, WorkflowDB


class WeatherTool(Node):
    name = "get_weather"
    description = "Current weather for a city"

    def prep(self, store):
        return store["city"]

    def exec(self, city):
        return f"sunny in {city}"

    def post(self, store, city, report):
        store["weather"] = report
        return "done"


def main():
    tool = WeatherTool()
    print("tool list for the prompt:", [(type(tool).name, type(tool).description)])
    flow = Flow(start=tool, db_path="tools.db", checkpoint_dir="ckpt")
    flow.on("node_start", lambda name, store: print("running", name))
    flow.run(Store({"city": "Oslo"}))
    db = WorkflowDB("tools.db")
    run = db.list_runs()[0]
    print("flow_name:", run["flow_name"], "| current_node:", run["current_node"])
    print("files:", sorted(os.listdir("ckpt")))


if __name__ == "__main__":
    main()
