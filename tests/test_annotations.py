"""Every public function and method of the package states its types: each argument (self and cls
aside, *args and **kwargs included) and its return. Checked from the source, so a new function
without them fails here; private helpers (a leading underscore) and functions nested in others are
left to their readers."""

import ast
from pathlib import Path

import pytest

import digitcmp

PACKAGE = Path(digitcmp.__file__).parent


def public_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of the module's public functions and its public classes' public methods."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            found.append((node.name, node))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            found += [
                (f"{node.name}.{m.name}", m)
                for m in node.body
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith("_")
            ]
    return found


def missing_annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    named = [a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
    starred = [a for a in (args.vararg, args.kwarg) if a is not None]
    missing = [a.arg for a in named + starred if a.annotation is None]
    return missing + (["return"] if node.returns is None else [])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_public_functions_state_their_types(path):
    unannotated = {
        name: missing
        for name, node in public_functions(ast.parse(path.read_text()))
        if (missing := missing_annotations(node))
    }
    assert not unannotated, f"{path.name}: functions without type annotations (name: what lacks one): {unannotated}"


def test_the_check_sees_a_missing_annotation():
    tree = ast.parse(
        "def typed(a: int, *rest: str, **kw: float) -> None: ...\n"
        "def untyped(a, b: int): ...\n"
        "class C:\n    def method(self, x) -> int: ...\n    def _private(self, y): ...\n"
        "def _helper(z): ...\n"
    )
    found = {name: missing_annotations(node) for name, node in public_functions(tree)}
    assert found == {"typed": [], "untyped": ["a", "return"], "C.method": ["x"]}
