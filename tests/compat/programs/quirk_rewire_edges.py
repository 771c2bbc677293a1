"""A web app keeps its nodes at module level and wires the graph in a function it
calls for every request; the second request re-adds the same edges (0.2 logged
that at WARNING level on the pocoflow logger, which is silent by default)."""

from pocoflow import Flow, Node, Store


class Retrieve(Node):
    def prep(self, store):
        return store["query"]

    def exec(self, query):
        return [f"doc about {query}"]

    def post(self, store, query, docs):
        store["docs"] = docs
        return "answer"


class Answer(Node):
    def prep(self, store):
        return store["docs"]

    def exec(self, docs):
        return f"based on {len(docs)} document(s)"

    def post(self, store, docs, answer):
        store["answer"] = answer
        return "done"


retrieve = Retrieve()
answer = Answer()


def create_flow():
    retrieve.then("answer", answer)
    return Flow(start=retrieve)


def handle_request(query):
    store = Store(data={"query": query})
    create_flow().run(store)
    return store["answer"]


def main():
    for query in ("solar", "wind", "tides"):
        print(query, "->", handle_request(query))


if __name__ == "__main__":
    main()
