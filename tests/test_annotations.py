"""Every public function and method of the package states its types (each argument, self and cls
aside, *args and **kwargs included, and its return) and says what it does in a docstring. Checked
from the source, so a new function without them fails here. Private helpers (a leading underscore)
and functions nested in others are left to their readers; a method that implements a contract
documented elsewhere (nn.Module's forward, a method that a Protocol class of the package declares
with its docstring) and an API route documented by its decorator's summary need no docstring of their own."""

import ast
from functools import cache
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


def documented_elsewhere(trees: list[ast.Module]) -> set[str]:
    """Names of methods whose contract is documented once: forward, and each method a Protocol
    class declares with a docstring."""
    names = {"forward"}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Protocol" for b in node.bases):
                names |= {m.name for m in node.body if isinstance(m, ast.FunctionDef) and ast.get_docstring(m)}
    return names


@cache
def package_contracts() -> frozenset[str]:
    return frozenset(documented_elsewhere([ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")]))


def has_summary(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A route whose decorator gives its OpenAPI summary (a docstring would add a description there)."""
    return any(isinstance(d, ast.Call) and any(k.arg == "summary" for k in d.keywords) for d in node.decorator_list)


def undocumented(tree: ast.Module, exempt: set[str]) -> list[str]:
    return [
        name
        for name, node in public_functions(tree)
        if ast.get_docstring(node) is None and name.rpartition(".")[2] not in exempt and not has_summary(node)
    ]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_public_functions_say_what_they_do(path):
    missing = undocumented(ast.parse(path.read_text()), package_contracts())
    assert not missing, f"{path.name}: public functions without a docstring: {missing}"


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


def test_the_check_sees_a_missing_docstring():
    tree = ast.parse(
        'class P(Protocol):\n    def run(self) -> None:\n        """Runs."""\n'
        "class Impl:\n    def run(self) -> None: ...\n    def other(self) -> None: ...\n"
        'def said() -> None:\n    """Says."""\n'
        "def silent() -> None: ...\n"
        "@router.get('/x', summary='X')\nasync def route() -> None: ...\n"
        "class Net:\n    def forward(self, x: int) -> int: ...\n"
    )
    assert undocumented(tree, documented_elsewhere([tree])) == ["Impl.other", "silent"]
