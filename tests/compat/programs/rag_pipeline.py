"""RAG: an offline flow chunks and embeds documents, an online flow embeds the
question, retrieves the closest chunks, augments the prompt and generates. The
online run is recorded in SQLite and inspected afterwards with WorkflowDB."""

import math
import re

from pocoflow import Flow, Node, Store, WorkflowDB

DOCUMENTS = [
    "PocoFlow nodes have three phases: prep reads the store, exec does the work, "
    "post writes results and returns an action.",
    "The SQLite backend records every run in three tables: pf_runs, pf_events and "
    "pf_checkpoints.",
    "Background runs return a RunHandle with status, wait and cancel.",
    "A typed Store checks every write against its schema and raises TypeError.",
]
VOCABULARY = sorted({w for d in DOCUMENTS for w in re.findall(r"[a-z_]+", d.lower())})


def get_embedding(text):
    """Bag-of-words vector, L2-normalised (stands in for an embedding API)."""
    words = re.findall(r"[a-z_]+", text.lower())
    vector = [float(words.count(term)) for term in VOCABULARY]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def call_llm(prompt):
    """Stands in for the LLM: answers with the first context line it was given."""
    context = prompt.split("Context:\n")[1].split("\n")[0]
    return f"According to the docs: {context}"


# ── offline indexing ────────────────────────────────────────────────────────

class ChunkDocuments(Node):
    def prep(self, store):
        return store["texts"]

    def exec(self, texts):
        chunks = []
        for text in texts:
            chunks.extend(s.strip() + "." for s in text.split(".") if s.strip())
        return chunks

    def post(self, store, prep_res, chunks):
        store["chunks"] = chunks
        return "default"


class EmbedDocuments(Node):
    def prep(self, store):
        return store["chunks"]

    def exec(self, chunks):
        return [get_embedding(chunk) for chunk in chunks]

    def post(self, store, prep_res, embeddings):
        store["index"] = embeddings
        print(f"indexed {len(embeddings)} chunks, {len(VOCABULARY)} dimensions")
        return "default"


# ── online answering ────────────────────────────────────────────────────────

class EmbedQuery(Node):
    def prep(self, store):
        return store["question"]

    def exec(self, question):
        return get_embedding(question)

    def post(self, store, prep_res, embedding):
        store["query_embedding"] = embedding
        return "retrieve"


class RetrieveDocuments(Node):
    top_k = 2

    def prep(self, store):
        return store["query_embedding"], store["index"], store["chunks"]

    def exec(self, prep_res):
        query, index, chunks = prep_res
        scores = [sum(q * d for q, d in zip(query, doc, strict=True)) for doc in index]
        ranked = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))[: self.top_k]
        return [{"chunk_id": i, "score": round(scores[i], 3), "text": chunks[i]} for i in ranked]

    def post(self, store, prep_res, hits):
        store["retrieved"] = hits
        for hit in hits:
            print(f"  retrieved #{hit['chunk_id']} score={hit['score']}: {hit['text']}")
        return "generate"


class GenerateAnswer(Node):
    max_retries = 3
    retry_delay = 0.01

    def prep(self, store):
        context = "\n".join(hit["text"] for hit in store["retrieved"])
        return f"Question: {store['question']}\nContext:\n{context}\nAnswer:"

    def exec(self, prompt):
        return call_llm(prompt)

    def post(self, store, prompt, answer):
        store["answer"] = answer
        return "done"


def main():
    chunk, embed = ChunkDocuments(), EmbedDocuments()
    chunk.then("default", embed)
    offline = Store(data={"texts": DOCUMENTS, "chunks": [], "index": []}, name="rag_offline")
    Flow(start=chunk, flow_name="rag_index").run(offline)

    embed_query, retrieve, generate = EmbedQuery(), RetrieveDocuments(), GenerateAnswer()
    embed_query.then("retrieve", retrieve)
    retrieve.then("generate", generate)

    online = Flow(start=embed_query, db_path="rag.db", flow_name="rag_answer")
    for question in ["Which tables does the SQLite backend use?",
                     "What does a RunHandle offer for background runs?"]:
        store = Store(
            data={"question": question, "chunks": offline["chunks"],
                  "index": offline["index"], "answer": ""},
            schema={"question": str, "answer": str},
            name="rag_online",
        )
        print(f"Q: {question}")
        online.run(store)
        print(f"A: {store['answer']}")

    db = WorkflowDB("rag.db")
    runs = db.list_runs()
    print("recorded runs:", len(runs), sorted(r["status"] for r in runs),
          sorted({r["flow_name"] for r in runs}))
    for run in sorted(runs, key=lambda r: r["started_at"]):
        events = db.get_events(run["run_id"])
        print("events:", [(e["event"], e["node_name"]) for e in events])
        print("actions:", [e["action"] for e in events if e["event"] == "node_end"])
        checkpoints = db.get_checkpoints(run["run_id"])
        print("checkpoints:", [(c["step"], c["node_name"]) for c in checkpoints])
        last = db.load_checkpoint(run["run_id"], checkpoints[-1]["step"])
        print("answer in the last checkpoint:", last["answer"])
        print("retrieved ids:", [hit["chunk_id"] for hit in last["retrieved"]])


if __name__ == "__main__":
    main()
