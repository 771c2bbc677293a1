"""Migrating from PocketFlow, as the 0.2 README shows: `>>` edges become
.then(action, node), and the old `shared` dict is passed straight to flow.run
(or wrapped: Store(data=shared_dict))."""

from pocoflow import Flow, Node, Store


class LoadQuestion(Node):
    def prep(self, shared):
        return shared["question"]

    def exec(self, question):
        return question.strip().rstrip("?")

    def post(self, shared, prep_res, cleaned):
        shared["cleaned"] = cleaned
        return "default"


class AnswerQuestion(Node):
    def prep(self, shared):
        return shared["cleaned"], shared.get("style", "plain")

    def exec(self, prep_res):
        cleaned, style = prep_res
        answer = f"You asked about {cleaned.lower()}"
        return answer.upper() if style == "loud" else answer

    def post(self, shared, prep_res, answer):
        shared["answer"] = answer
        return "default"


def build():
    load, answer = LoadQuestion(), AnswerQuestion()
    load.then("default", answer)         # was: load >> answer
    return Flow(start=load)


def main():
    shared = {"question": "  What is PocoFlow?  "}
    result = build().run(shared)         # a plain dict is accepted
    # Normalised: 0.2 copied the dict into a new Store (the dict stayed unchanged);
    # this build writes through to it. Only the returned Store is printed.
    print("returned:", type(result).__name__, result["cleaned"], "|", result["answer"])
    print("result keys:", sorted(result.keys()))

    shared_dict = {"question": "Why nodes?", "style": "loud"}
    store = Store(data=shared_dict)
    build().run(store)
    print("wrapped:", store["answer"])
    print("the wrapped dict was copied:", "answer" not in shared_dict)


if __name__ == "__main__":
    main()
