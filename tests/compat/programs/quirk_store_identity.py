"""A chat server keeps one Store per session and indexes per-session data by the
Store object itself (a dict keyed by store, a set of stores seen by a hook)."""

from pocoflow import Flow, Node, Store


class Reply(Node):
    def prep(self, store):
        return store["message"]

    def exec(self, message):
        return message[::-1]

    def post(self, store, message, reply):
        store["reply"] = reply
        return "done"


def main():
    sessions = {}
    seen = set()
    flow = Flow(start=Reply())
    flow.on("node_end", lambda name, action, elapsed, store: seen.add(store))
    for user in ("ann", "bob"):
        store = Store(data={"message": "hello", "reply": ""}, name="chat")
        sessions[store] = user
        flow.run(store)
    print("sessions:", sorted(sessions.values()))
    print("stores seen by the hook:", len(seen))
    a, b = list(sessions)
    print("two sessions with the same data are different stores:", a != b)


if __name__ == "__main__":
    main()
