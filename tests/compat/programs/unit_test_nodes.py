"""Testing nodes in isolation, as the 0.2 README invites ("exec: pure function,
testable without a store"): call prep, exec and post directly, exec of an
AsyncNode included, and the routing helpers next_node and then."""

import asyncio

from pocoflow import AsyncNode, Node, Store


class Classify(Node):
    def prep(self, store):
        return store["ticket"]

    def exec(self, ticket):
        return "bug" if "error" in ticket.lower() else "question"

    def post(self, store, ticket, label):
        store["label"] = label
        return label


class FetchPages(AsyncNode):
    def prep(self, store):
        return store["urls"]

    async def exec_async(self, urls):
        async def fetch(url):
            await asyncio.sleep(0)
            return f"<html>{url}</html>"

        return await asyncio.gather(*(fetch(u) for u in urls))

    def post(self, store, urls, pages):
        store["pages"] = list(pages)
        return "done"


class Triage(Node):
    def exec(self, prep_res):
        return None


def main():
    node = Classify()
    store = Store({"ticket": "Error 500 on login"})
    prep = node.prep(store)
    result = node.exec(prep)
    action = node.post(store, prep, result)
    print("classify:", prep, "->", result, "->", action, "| store:", store["label"])
    print("exec alone:", node.exec("how do I reset my password?"))
    one = Store({"ticket": "error in the app"})
    print("_run alone:", Classify()._run(one), one["label"])

    fetch = FetchPages()
    urls = fetch.prep(Store({"urls": ["a.com", "b.com"]}))
    print("exec_async alone:", asyncio.run(fetch.exec_async(urls)))
    print("exec of an AsyncNode alone:", fetch.exec(urls))
    pages = Store({"urls": ["c.com"]})
    print("_run of an AsyncNode alone:", fetch._run(pages), pages["pages"])

    bug, question, other = Triage(), Triage(), Triage()
    node.then("bug", bug).then("question", question).then("*", other)
    print("next_node:", node.next_node("bug") is bug, node.next_node("question") is question,
          node.next_node("spam") is other)
    print("edges:", sorted(node._successors))
    lonely = Triage()
    print("no edges:", lonely.next_node("default"))


if __name__ == "__main__":
    main()
