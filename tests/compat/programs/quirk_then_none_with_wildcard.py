"""A router with an explicit end (then('stop', None)) next to a catch-all '*' edge."""

from pocoflow import Flow, Node, Store


class Router(Node):
    def prep(self, store):
        return store["command"]

    def exec(self, command):
        return command

    def post(self, store, command, action):
        return action


class Fallback(Node):
    def exec(self, prep_res):
        return "handled"

    def post(self, store, prep_res, result):
        store["handled_by"] = "fallback"
        return "done"


def main():
    router = Router()
    router.then("stop", None)
    router.then("*", Fallback())
    for command in ("stop", "dance"):
        store = Store({"command": command})
        trail = []
        flow = Flow(start=router)
        flow.on("node_start", lambda name, store, trail=trail: trail.append(name))
        flow.run(store)
        print(command, "->", trail, store.get("handled_by"))


if __name__ == "__main__":
    main()
