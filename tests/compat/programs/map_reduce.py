"""Map-reduce: candidate screening (map: an LLM verdict per resume, in a loop;
reduce: a summary) and a word count over chunks, with a '*' edge catching every
verdict route. Runs are recorded in SQLite."""

from pocoflow import Flow, Node, Store, WorkflowDB

RESUMES = {
    "resume1.txt": "Alice Martin. MSc Computer Science. 6 years backend engineer. Python, Go.",
    "resume2.txt": "Bob Stone. High school. 1 year retail assistant.",
    "resume3.txt": "Chen Wei. BSc Mathematics. 4 years data engineer. Python, SQL.",
    "resume4.txt": "Dana Ruiz. BA History. 2 years museum guide.",
}


def fake_llm_evaluate(resume):
    """Stands in for an LLM judging the resume; answers in YAML."""
    name = resume.split(".")[0]
    years = int(next(w for w in resume.split() if w.isdigit()))
    degree = any(d in resume for d in ("BSc", "MSc"))
    qualifies = degree and years >= 3
    reason = "degree and experience" if qualifies else "missing degree or experience"
    return (f"```yaml\ncandidate_name: {name}\nqualifies: {str(qualifies).lower()}\n"
            f"reason: {reason}\n```")


def parse_yaml(text):
    block = text.split("```yaml")[1].split("```")[0]
    data = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        data[key.strip()] = {"true": True, "false": False}.get(value, value)
    return data


class ReadResumes(Node):
    def exec(self, prep_res):
        return dict(sorted(RESUMES.items()))

    def post(self, store, prep_res, resumes):
        store["resumes"] = resumes
        print(f"Read {len(resumes)} resumes")
        return "default"


class EvaluateResumes(Node):
    max_retries = 3
    retry_delay = 0.01

    def prep(self, store):
        return list(store["resumes"].items())

    def exec(self, items):
        evaluations = {}
        for filename, content in items:
            evaluations[filename] = parse_yaml(fake_llm_evaluate(content))
            verdict = "QUALIFIED" if evaluations[filename]["qualifies"] else "NOT QUALIFIED"
            print(f"  {evaluations[filename]['candidate_name']} ({filename}): {verdict}")
        return evaluations

    def post(self, store, prep_res, evaluations):
        store["evaluations"] = evaluations
        qualified = sum(e["qualifies"] for e in evaluations.values())
        return "hire" if qualified else "nobody"


class ReduceResults(Node):
    def prep(self, store):
        return store["evaluations"]

    def exec(self, evaluations):
        names = [e["candidate_name"] for e in evaluations.values() if e["qualifies"]]
        return {"total": len(evaluations), "qualified": len(names), "names": names,
                "percentage": round(len(names) / len(evaluations) * 100, 1)}

    def post(self, store, prep_res, summary):
        store["summary"] = summary
        print(f"Qualified: {summary['qualified']}/{summary['total']} ({summary['percentage']}%)")
        for name in summary["names"]:
            print(f"  - {name}")
        return "done"


class SplitText(Node):
    def prep(self, store):
        return store["text"]

    def exec(self, text):
        words = text.split()
        return [" ".join(words[i:i + 5]) for i in range(0, len(words), 5)]

    def post(self, store, text, chunks):
        store["chunks"] = chunks
        return "map"


class MapCount(Node):
    def prep(self, store):
        return store["chunks"]

    def exec(self, chunks):
        partials = []
        for chunk in chunks:
            counts = {}
            for word in chunk.lower().replace(",", "").replace(".", "").split():
                counts[word] = counts.get(word, 0) + 1
            partials.append(counts)
        return partials

    def post(self, store, chunks, partials):
        store["partials"] = partials
        return "reduce"


class ReduceCount(Node):
    def prep(self, store):
        return store["partials"]

    def exec(self, partials):
        total = {}
        for counts in partials:
            for word, n in counts.items():
                total[word] = total.get(word, 0) + n
        return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:3]

    def post(self, store, partials, top):
        store["top_words"] = [f"{w}={n}" for w, n in top]
        return "done"


def main():
    read, evaluate, reduce_node = ReadResumes(), EvaluateResumes(), ReduceResults()
    read.then("default", evaluate)
    evaluate.then("*", reduce_node)   # every verdict route goes to the reducer
    store = Store(data={"resumes": {}, "evaluations": {}, "summary": {}}, name="screening")
    Flow(start=read, db_path="mapreduce.db", flow_name="screening").run(store)

    split, count, total = SplitText(), MapCount(), ReduceCount()
    split.then("map", count)
    count.then("reduce", total)
    text = ("the flow runs the node, the node runs exec, and the flow records the run. "
            "the store keeps the state of the run.")
    words = Store(data={"text": text}, name="wordcount")
    Flow(start=split, db_path="mapreduce.db", flow_name="wordcount").run(words)
    print("chunks:", len(words["chunks"]), "| top words:", words["top_words"])

    db = WorkflowDB("mapreduce.db")
    for run in sorted(db.list_runs(), key=lambda r: r["flow_name"]):
        cps = db.get_checkpoints(run["run_id"])
        print(run["flow_name"], run["status"], run["total_steps"], [c["node_name"] for c in cps])
    screening = next(r for r in db.list_runs() if r["flow_name"] == "screening")
    route = [e["action"] for e in db.get_events(screening["run_id"]) if e["event"] == "node_end"]
    print("routes taken:", route)


if __name__ == "__main__":
    main()
