"""Wrong answers a task's test must reject: the canonical solution with one small change (a mutant), and a body
that returns its type's empty value. A test that passes any of them accepts a wrong answer; the benchmark
check lists such tasks with the mutant that survived.

Operators, one change each, at sites outside strings and comments:
- comparison: `<` <-> `<=`, `>` <-> `>=`, `==` <-> `!=` (Python also `in` <-> `not in`, `is` <-> `is not`);
- constant: an integer literal n -> n + 1;
- off_by_one: Python: a slice bound or a range() end moved by one; other languages: `<` <-> `<=` in a
  loop condition, which is what their off-by-one looks like;
- boolean: `and` <-> `or` (`&&` <-> `||`), `True` <-> `False`;
- arithmetic: `+` <-> `-`.
A mutant can happen to mean the same as the original (an "equivalent mutant", e.g. a changed constant on a path
no input reaches): a surviving mutant is a lead to read, not a proof that the test is weak. The mutants of a
task are chosen deterministically: one site per operator in the order above, then second sites, up to `limit`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from codemill.eval.languages import Adapter, python_entry_point
from codemill.humaneval import Problem

OPERATORS = ("comparison", "constant", "off_by_one", "boolean", "arithmetic")
CONSTANT_RETURN = "constant_return"
DEFAULT_MUTANTS = 4  # besides the constant return, per task


@dataclass(frozen=True)
class Mutant:
    kind: str          # an operator of OPERATORS, or CONSTANT_RETURN
    completion: str
    change: str        # what was changed, for a reader: "line 3: `<` -> `<=`"


@dataclass(frozen=True)
class Site:
    operator: str
    start: int         # offsets in the completion
    end: int
    replacement: str

    def apply(self, text: str) -> Mutant:
        line = text.count("\n", 0, self.start) + 1
        return Mutant(self.operator, text[:self.start] + self.replacement + text[self.end:],
                      f"line {line}: `{text[self.start:self.end].strip()}` -> `{self.replacement.strip()}`")


def mutants(problem: Problem, adapter: Adapter, limit: int = DEFAULT_MUTANTS) -> list[Mutant]:
    """The constant return, then up to `limit` mutants of the canonical solution."""
    text = problem.canonical_solution
    sites = python_sites(problem) if problem.language == "Python" else brace_sites(text, problem.language)
    chosen = choose(sites, limit)
    out = [Mutant(CONSTANT_RETURN, adapter.wrong_completion(problem), "the body returns its type's empty value")]
    seen = {out[0].completion, text}
    for site in chosen:
        m = site.apply(text)
        if m.completion not in seen:
            seen.add(m.completion)
            out.append(m)
    return out


def choose(sites: list[Site], limit: int) -> list[Site]:
    by_op = {op: [s for s in sites if s.operator == op] for op in OPERATORS}
    chosen: list[Site] = []
    for round_no in range(max((len(v) for v in by_op.values()), default=0)):
        for op in OPERATORS:
            if len(chosen) < limit and round_no < len(by_op[op]):
                # spread the picks: the first site, then the middle one, then the rest in order
                order = _spread(len(by_op[op]))
                chosen.append(by_op[op][order[round_no]])
    return chosen


def _spread(n: int) -> list[int]:
    order = [0] + ([n // 2] if n > 1 else [])
    return order + [i for i in range(n) if i not in order]


# ---------------------------------------------------------------------------------------------- Python

_COMPARE_FLIP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
                 ast.In: "not in", ast.NotIn: "in", ast.Is: "is not", ast.IsNot: "is"}
_OP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


def python_sites(problem: Problem) -> list[Site]:
    """Mutation sites in the body of the tested function, found on its syntax tree."""
    prefix, body = problem.prompt, problem.canonical_solution
    source = prefix + body
    try:
        tree = ast.parse(source)
        name = python_entry_point(problem)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    base = len(prefix)

    def offset(lineno: int, col: int) -> int:
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode(errors="ignore"))

    def span(node) -> tuple[int, int]:
        return offset(node.lineno, node.col_offset) - base, offset(node.end_lineno, node.end_col_offset) - base

    function = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if function is None:
        return []
    sites: list[Site] = []
    for node in ast.walk(function):
        if not hasattr(node, "lineno") or offset(node.lineno, node.col_offset) < base:
            continue
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE_FLIP:
            start, _ = span(node.left)
            _, left_end = span(node.left)
            right_start, _ = span(node.comparators[0])
            between = body[left_end:right_start]
            op = _OP_TEXT[type(node.ops[0])]
            i = between.find(op)
            if i >= 0 and (op not in ("in", "is") or not between[i:].startswith(op + " not")):
                sites.append(Site("comparison", left_end + i, left_end + i + len(op), _COMPARE_FLIP[type(node.ops[0])]))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            start, end = span(node)
            sites.append(Site("constant", start, end, str(node.value + 1)))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            start, end = span(node)
            sites.append(Site("boolean", start, end, str(not node.value)))
        elif isinstance(node, ast.BoolOp):
            _, end = span(node.values[0])
            start, _ = span(node.values[1])
            between = body[end:start]
            word = "and" if isinstance(node.op, ast.And) else "or"
            i = between.find(word)
            if i >= 0:
                sites.append(Site("boolean", end + i, end + i + len(word), "or" if word == "and" else "and"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            _, end = span(node.left)
            start, _ = span(node.right)
            between = body[end:start]
            sign = "+" if isinstance(node.op, ast.Add) else "-"
            i = between.find(sign)
            if i >= 0:
                sites.append(Site("arithmetic", end + i, end + i + 1, "-" if sign == "+" else "+"))
        elif isinstance(node, ast.Slice):
            bound = node.upper or node.lower
            if bound is not None:
                start, end = span(bound)
                shift = " - 1" if bound is node.upper else " + 1"
                sites.append(Site("off_by_one", start, end, f"({body[start:end]}){shift}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
              and 1 <= len(node.args) <= 3):
            bound = node.args[0] if len(node.args) == 1 else node.args[1]
            start, end = span(bound)
            sites.append(Site("off_by_one", start, end, f"({body[start:end]}) - 1"))
    return [s for s in sorted(sites, key=lambda s: (s.start, s.operator)) if 0 <= s.start < s.end <= len(body)]


# ---------------------------------------------------------------------------------------------- C++, Java, JS, Go

_BRACE_COMPARE = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "===": "!==",
                  "!==": "==="}
# Comparison operators (not shifts, arrows, channel receives, compound assignments), logical operators, integer
# literals, boolean literals, binary + and - between spaces.
_TOKEN = re.compile(r"(?<![<>=!+\-*/&|^%])(?:===|!==|<=|>=|==|!=|<|>)(?![<>=\-])|&&|\|\|"
                    r"|(?<![\w.])\d+(?![\w.])|\btrue\b|\bfalse\b| \+ | - ")
_LOOP = re.compile(r"\b(?:for|while)\s*\(")
# A generic type's angle brackets: `vector<int>`, `Map<String, List<Integer>>`, `ArrayList<>`.
_GENERIC = re.compile(r"(?<=[\w>])<[\w:\s,*&<>\[\]?.]*>")


def code_mask(text: str, language: str) -> str:
    """`text` with strings, characters and comments blanked (same length): where mutations may not go."""
    out = list(text)
    quotes = {"Go": "\"'`", "JavaScript": "\"'`"}.get(language, "\"'")
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i) or text.startswith("/*", i):
            end = text.find("\n", i) if text.startswith("//", i) else text.find("*/", i + 2) + 2
            end = n if end < (1 if text.startswith("//", i) else 2) else end
            for k in range(i, end):
                out[k] = " " if out[k] != "\n" else "\n"
            i = end
            continue
        if text[i] in quotes:
            q, j = text[i], i + 1
            while j < n and text[j] != q and not (text[j] == "\n" and q != "`"):
                j += 2 if text[j] == "\\" and q != "`" else 1
            for k in range(i, min(j + 1, n)):
                out[k] = " "
            i = j + 1
            continue
        i += 1
    return "".join(out)


def brace_sites(text: str, language: str) -> list[Site]:
    masked = code_mask(text, language)
    masked = re.sub(r"(?m)^[ \t]*#.*$", lambda m: " " * len(m.group(0)), masked)  # preprocessor lines
    generic = [False] * len(masked)
    for m in _GENERIC.finditer(masked):
        for k in range(m.start(), m.end()):
            generic[k] = True
    sites: list[Site] = []
    for m in _TOKEN.finditer(masked):
        token = m.group(0)
        start, end = m.span()
        if token in _BRACE_COMPARE:
            if generic[start]:
                continue
            line_start = masked.rfind("\n", 0, start) + 1
            in_loop = bool(_LOOP.search(masked[line_start:start]))
            op = "off_by_one" if in_loop and token in ("<", "<=", ">", ">=") else "comparison"
            sites.append(Site(op, start, end, _BRACE_COMPARE[token]))
        elif token in ("&&", "||"):
            sites.append(Site("boolean", start, end, "||" if token == "&&" else "&&"))
        elif token in ("true", "false"):
            sites.append(Site("boolean", start, end, "false" if token == "true" else "true"))
        elif token in (" + ", " - "):
            sites.append(Site("arithmetic", start, end, " - " if token == " + " else " + "))
        else:
            sites.append(Site("constant", start, end, str(int(token) + 1)))
    return sites
