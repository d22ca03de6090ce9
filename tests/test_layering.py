"""The package's architecture, checked from its source: packages form layers (common < core <
study < run < tune, app < testing, the command line), a module imports only from its own package or from a
lower layer, no two modules import each other in a circle (imports inside functions included), and
no module imports another's private names."""

import ast
import functools
from pathlib import Path

import pytest

import digitcmp

PACKAGE = Path(digitcmp.__file__).parent
LAYERS = {"common": 0, "core": 1, "study": 2, "run": 3, "tune": 4, "app": 4, "testing": 5}
TOP = 6  # cli.py, __init__.py, __main__.py: the entry points, above everything


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in a file, at any depth."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("digitcmp"):
                continue
            names = [a.name for a in node.names]
            # `from package import module` imports the module itself
            submodules = [
                f"{target}.{n}"
                for n in names
                if is_package(target) and (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).with_suffix(".py").exists()
            ]
            if submodules:
                found += [(m, []) for m in submodules]
                rest = [n for n in names if f"{target}.{n}" not in submodules]
                if rest:
                    found.append((target, rest))
            else:
                found.append((target, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("digitcmp")]
    return found


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1], LAYERS[parts[1]]
    if len(parts) == 2 and parts[1] in LAYERS:  # the package itself
        return parts[1], LAYERS[parts[1]]
    return "", TOP


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = sorted(module_name(p) for p in SOURCES)


@functools.cache
def graph() -> dict[str, list[tuple[str, list[str]]]]:
    """Every module's imports, parsed once, when a test first asks (not while the tests are collected)."""
    return {module_name(p): imports(p) for p in SOURCES}


def test_every_module_lives_in_a_layer():
    loose = [m for m in graph() if layer(m)[1] == TOP and m not in ("digitcmp", "digitcmp.cli", "digitcmp.__main__")]
    assert not loose, f"modules outside the layers: {loose}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_go_down(module):
    package, rank = layer(module)
    upward = []
    for target, _ in graph()[module]:
        other, other_rank = layer(target)
        if other != package and other_rank >= rank:
            upward.append(target)
    assert not upward, f"{module} imports from its own layer or above: {upward}"


def test_no_import_circle():
    modules = graph()
    edges = {m: {t for t, _ in targets if t in modules and t != m} for m, targets in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_private_name_is_imported_from_another_module():
    private = [
        f"{module} takes {name} from {target}"
        for module, targets in graph().items()
        for target, names in targets
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, private


def test_the_checks_see_what_they_check():
    # Known edges, so that a parser that found nothing would fail here rather than pass above.
    assert ("digitcmp.core.config", ["RunConfig"]) in graph()["digitcmp.study.store"]
    assert any(t == "digitcmp.run.executors" for t, _ in graph()["digitcmp.tune.search"])
    assert layer("digitcmp.app.server") == ("app", 4) and layer("digitcmp.cli") == ("", TOP)
