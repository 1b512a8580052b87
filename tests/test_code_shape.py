"""Shape of the source: no function over 60 lines unless its docstring says why ("One function because")."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ptsbench"
LIMIT = 60
REASON = "One function because"


def long_functions(root: Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT and REASON not in (ast.get_docstring(node) or ""):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_rule_sees_a_long_function_and_accepts_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "a.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "b.py").write_text(f'def reasoned():\n    """{REASON}: a kernel."""\n{body}\n')
    assert long_functions(tmp_path) == [f"{tmp_path.name}/a.py:1 long ({LIMIT + 1} lines)"]


def test_no_function_in_src_is_longer_than_the_limit_without_a_reason():
    assert long_functions() == []
