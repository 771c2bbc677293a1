"""A research agent with tools: an LLM decides (search, calculate or answer) in a
loop, the way the 0.2 cookbook's agent does, with a scripted stand-in LLM."""

import ast
import operator
import re

from pocoflow import Flow, LLMResponse, Node, Store, UniversalLLMProvider

SEARCH_INDEX = {
    "population of lyon": "Lyon had 522,250 inhabitants in the 2021 census.",
    "population of grenoble": "Grenoble had 156,659 inhabitants in the 2021 census.",
}


class ScriptedLLM(UniversalLLMProvider):
    """Offline stand-in: decides from what the prompt already contains."""

    def __init__(self):
        super().__init__(primary_provider="openai", fallback_providers=[])
        self.prompts = []

    def call(self, prompt=None, model=None, *, messages=None, **kwargs):
        self.prompts.append(prompt)
        if prompt.startswith("DECIDE"):
            if "Lyon had" not in prompt:
                content = "```yaml\naction: search\nquery: population of Lyon\n```"
            elif "Grenoble had" not in prompt:
                content = "```yaml\naction: search\nquery: population of Grenoble\n```"
            elif "RESULT:" not in prompt:
                content = "```yaml\naction: calculate\nexpression: 522250 + 156659\n```"
            else:
                content = "```yaml\naction: answer\n```"
        else:
            total = re.findall(r"RESULT: (\d+)", prompt)[-1]
            content = f"Lyon and Grenoble together have {int(total):,} inhabitants."
        return LLMResponse(content=content, success=True, provider="scripted",
                           model=model or "scripted-1", attempts=1, total_time=0.0)


def parse_yaml_block(text):
    """Tiny parser for the flat `key: value` YAML the prompt asks for."""
    block = text.split("```yaml")[1].split("```")[0]
    result = {}
    for line in block.strip().splitlines():
        key, _, value = line.partition(":")
        result[key.strip()] = value.strip()
    return result


def _llm_call(llm, model, prompt):
    response = llm.call(prompt, model=model)
    if not response.success:
        raise RuntimeError(f"LLM failed: {response.error_history}")
    return response.content


class DecideAction(Node):
    max_retries = 2

    def prep(self, store):
        return store["question"], store["context"], store["_llm"], store.get("_model")

    def exec(self, prep_result):
        question, context, llm, model = prep_result
        prompt = f"DECIDE\nQuestion: {question}\nContext:\n{context or 'nothing yet'}"
        return parse_yaml_block(_llm_call(llm, model, prompt))

    def post(self, store, prep_result, decision):
        store["decision"] = decision
        print(f"  decide -> {decision['action']}")
        return decision["action"]


class SearchTool(Node):
    def prep(self, store):
        return store["decision"]["query"]

    def exec(self, query):
        return SEARCH_INDEX.get(query.lower(), "no result")

    def post(self, store, query, found):
        store["context"] += f"SEARCH {query}: {found}\n"
        print(f"  search '{query}': {found}")
        return "decide"


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def safe_eval(expression):
    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unsupported expression: {expression}")

    return walk(ast.parse(expression, mode="eval").body)


class CalculatorTool(Node):
    def prep(self, store):
        return store["decision"]["expression"]

    def exec(self, expression):
        return safe_eval(expression)

    def post(self, store, expression, value):
        store["context"] += f"CALC {expression} RESULT: {value}\n"
        print(f"  calculate {expression} = {value}")
        return "decide"


class AnswerQuestion(Node):
    def prep(self, store):
        return store["question"], store["context"], store["_llm"], store.get("_model")

    def exec(self, prep_result):
        question, context, llm, model = prep_result
        return _llm_call(llm, model, f"ANSWER\nQuestion: {question}\n{context}")

    def post(self, store, prep_result, answer):
        store["answer"] = answer
        return "done"


def main():
    llm = ScriptedLLM()
    decide, search = DecideAction(), SearchTool()
    calculate, answer = CalculatorTool(), AnswerQuestion()
    decide.then("search", search)
    decide.then("calculate", calculate)
    decide.then("answer", answer)
    search.then("decide", decide)
    calculate.then("decide", decide)

    store = Store(
        data={"question": "How many people live in Lyon and Grenoble together?",
              "context": "", "answer": "", "_llm": llm, "_model": None},
        name="research_agent",
    )
    visited = []
    flow = Flow(start=decide, max_steps=20)
    flow.on("node_start", lambda name, store: visited.append(name))
    flow.on("flow_end", lambda steps, store: print(f"agent finished in {steps} steps"))

    print(f"Question: {store['question']}")
    flow.run(store)
    print("path:", " -> ".join(visited))
    print("answer:", store["answer"])
    print("LLM calls:", len(llm.prompts))
    print("context:")
    print(store["context"], end="")
    print("provider settings:", llm.primary_provider, llm.fallback_providers, llm.max_retries)


if __name__ == "__main__":
    main()
