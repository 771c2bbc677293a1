"""Logging as the 0.2 README sets it up: setup_logging() once at start, a module
logger from get_logger(), a flow that retries once; the log file holds the
pocoflow.* lines, and nothing is printed on the console."""

import os

from pocoflow import Flow, Node, Store
from pocoflow.logging import disable_logging, get_logger, setup_logging

_log = get_logger("nodes.summarise")


class Summarise(Node):
    max_retries = 2
    attempts = 0

    def prep(self, store):
        return store["text"]

    def exec(self, text):
        Summarise.attempts += 1
        _log.info("summarising  len=%d", len(text))
        if Summarise.attempts == 1:
            raise ConnectionError("transient")
        return text[:10]

    def post(self, store, text, summary):
        store["summary"] = summary
        return "done"


def main():
    print("logger name:", _log.name)
    path = setup_logging("run", log_level="debug", log_dir="logs", adapter="openrouter")
    print("log file:", path.parent.name, path.name.startswith("run-openrouter-"),
          path.suffix, os.path.isabs(path))
    store = Store({"text": "PocoFlow logs through dd-logging."})
    Flow(start=Summarise(), flow_name="logged").run(store)
    print("summary:", store["summary"])
    text = path.read_text(encoding="utf-8")
    # pocoflow.node is left out here: see quirk_logger_hierarchy.py
    for logger in ("pocoflow.nodes.summarise", "pocoflow.flow"):
        print(f"{logger} wrote to the file:", f" {logger} " in text)
    print("the retry was logged as a warning:", "WARNING" in text and "transient" in text)
    disable_logging()
    print("files:", len(os.listdir("logs")))


if __name__ == "__main__":
    main()
