"""A text-to-SQL tool node that reuses the sqlite3 connection the app opened at
start-up (0.2 ran every phase on the thread that called flow.run)."""

import sqlite3

from pocoflow import Flow, Node, Store

conn = sqlite3.connect(":memory:")
conn.executescript("""
    CREATE TABLE orders (id INTEGER, customer TEXT, amount REAL);
    INSERT INTO orders VALUES (1, 'ann', 30.0), (2, 'bob', 12.5), (3, 'ann', 7.5);
""")


class GenerateSQL(Node):
    def prep(self, store):
        return store["question"]

    def exec(self, question):
        return "SELECT customer, SUM(amount) FROM orders GROUP BY customer ORDER BY customer"

    def post(self, store, question, sql):
        store["sql"] = sql
        return "run"


class RunSQL(Node):
    def prep(self, store):
        return store["sql"]

    def exec(self, sql):
        return conn.execute(sql).fetchall()

    def post(self, store, sql, rows):
        store["rows"] = rows
        return "done"


def main():
    generate, run = GenerateSQL(), RunSQL()
    generate.then("run", run)
    store = Store({"question": "How much did each customer spend?"})
    try:
        Flow(start=generate).run(store)
        print("rows:", store["rows"])
    except sqlite3.ProgrammingError as exc:
        print("sqlite3.ProgrammingError:", str(exc).split(".")[0])


if __name__ == "__main__":
    main()
