"""A Store declares its schema up front with None placeholders for results that do
not exist yet, and validates before the run (0.2's validate() checks that the
required keys are present)."""

from pocoflow import Flow, Node, Store


class Answer(Node):
    def prep(self, store):
        return store["question"]

    def exec(self, question):
        return f"42 is the answer to {question!r}"

    def post(self, store, question, answer):
        store["answer"] = answer
        store["confidence"] = 0.9
        return "done"


def main():
    store = Store(
        data={"question": "life?", "answer": None, "confidence": None},
        schema={"question": str, "answer": str, "confidence": float},
        name="qa",
    )
    try:
        store.validate()
        print("schema keys present: valid")
    except ValueError as exc:
        print("validate raised:", exc)
    Flow(start=Answer()).run(store)
    store.validate()
    print(store["answer"], store["confidence"])


if __name__ == "__main__":
    main()
