"""Sync code that drives an async library with asyncio.run(): a hook that pushes
progress to an async notifier, and a node whose prep fetches with an async client.
Under 0.2 every hook and prep ran in plain synchronous code."""

import asyncio

from pocoflow import Flow, Node, Store

NOTIFICATIONS = []


async def notify(message):
    await asyncio.sleep(0)
    NOTIFICATIONS.append(message)


async def fetch_profile(user_id):
    await asyncio.sleep(0)
    return {"id": user_id, "name": "Ada"}


class LoadProfile(Node):
    def prep(self, store):
        return asyncio.run(fetch_profile(store["user_id"]))

    def exec(self, profile):
        return f"Welcome back, {profile['name']}!"

    def post(self, store, profile, greeting):
        store["greeting"] = greeting
        return "done"


def main():
    flow = Flow(start=LoadProfile())
    flow.on("node_end", lambda name, action, elapsed, store:
            asyncio.run(notify(f"{name} finished with {action}")))
    store = Store({"user_id": 7})
    try:
        flow.run(store)
        print("greeting:", store["greeting"])
    except RuntimeError as exc:
        print("run failed:", type(exc).__name__)
    print("notifications:", NOTIFICATIONS)

    # the hook alone, on a node that does not call asyncio.run itself
    class Plain(Node):
        def exec(self, prep_res):
            return "ok"

    NOTIFICATIONS.clear()
    plain = Flow(start=Plain())
    plain.on("node_end", lambda name, action, elapsed, store:
             asyncio.run(notify(f"{name} finished with {action}")))
    plain.run(Store())
    print("notifications from the hook:", NOTIFICATIONS)


if __name__ == "__main__":
    main()
