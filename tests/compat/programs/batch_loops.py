"""Batch processing the 0.2 way (0.2 has no BatchNode): one node loops over the
items inside exec, and a queue-draining node routes back to itself once per item."""

from pocoflow import Flow, Node, Store

GLOSSARY = {
    "french": {"hello": "bonjour", "world": "monde", "flow": "flux"},
    "spanish": {"hello": "hola", "world": "mundo", "flow": "flujo"},
    "german": {"hello": "hallo", "world": "welt", "flow": "fluss"},
}


def fake_translate(text, language):
    """Stands in for an LLM translation call."""
    words = GLOSSARY[language]
    return " ".join(words.get(w, w) for w in text.lower().split())


class TranslateAll(Node):
    """Batch inside exec: one node, every language."""

    max_retries = 2

    def prep(self, store):
        return store["text"], store["languages"]

    def exec(self, prep_res):
        text, languages = prep_res
        results = {}
        for language in languages:
            results[language] = fake_translate(text, language)
            print(f"  translated into {language}")
        return results

    def post(self, store, prep_res, results):
        store["translations"] = results
        return "files"


class ProcessNextFile(Node):
    """Batch as a loop in the graph: one file per visit, back to itself until done."""

    def prep(self, store):
        if not store["queue"]:
            return None
        return store["queue"][0]

    def exec(self, filename):
        if filename is None:
            return None
        name, _, ext = filename.rpartition(".")
        return {"file": filename, "words": len(name.split("_")), "ext": ext}

    def post(self, store, filename, report):
        if report is None:
            return "finished"
        store["queue"] = store["queue"][1:]
        store["reports"] = store["reports"] + [report]
        return "next"


class Summary(Node):
    def prep(self, store):
        return store["reports"]

    def exec(self, reports):
        return sum(r["words"] for r in reports)

    def post(self, store, reports, total):
        store["total_words"] = total
        print(f"processed {len(reports)} files, {total} words in their names")
        return "done"


def main():
    translate, process, summary = TranslateAll(), ProcessNextFile(), Summary()
    translate.then("files", process)
    process.then("next", process)
    process.then("finished", summary)

    store = Store(
        data={"text": "Hello World Flow", "languages": ["french", "spanish", "german"],
              "translations": {}, "queue": ["annual_report.pdf", "q3_sales_figures.xlsx",
                                            "notes.txt", "team_photo_2024.jpg"],
              "reports": []},
        name="batch",
    )
    steps = []
    flow = Flow(start=translate, max_steps=10)
    flow.on("node_end", lambda name, action, elapsed, store: steps.append(f"{name}:{action}"))
    flow.on("flow_end", lambda n, store: print(f"flow_end after {n} steps"))
    flow.run(store)

    for language, text in store["translations"].items():
        print(f"{language}: {text}")
    for report in store["reports"]:
        print(report)
    print("steps:", steps)

    # a queue longer than max_steps allows is stopped with RuntimeError
    store["queue"] = [f"file_{i}.txt" for i in range(20)]
    store["reports"] = []
    try:
        Flow(start=process, max_steps=5).run(store)
    except RuntimeError as exc:
        print("RuntimeError mentions max_steps:", "max_steps" in str(exc))
    print("files processed before the guard stopped the loop:", len(store["reports"]))


if __name__ == "__main__":
    main()
