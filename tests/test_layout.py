"""The package's layout (docs/concepts.md "Layout"): imports point one way, down the tiers, and
never in a circle; every module holds one concept and stays short."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "selfref_ghn"
ENVS = ROOT / "envs"  # shipped as selfref_ghn.envs
# tiers from the bottom up; a module may import its own tier and the tiers below, never above
TIERS = ("", "model", "evolution", "run", "tools")
# the rigid-body solver is one algorithm (Box2D's island solver), kept whole on purpose
LONG_ALLOWED = {"selfref_ghn.envs._box2d"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for base, name in ((PACKAGE, "selfref_ghn"), (ENVS, "selfref_ghn.envs")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name, *parts])] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every module of the package that ``module`` imports, at the top or inside a function
    (a local import still ties the two modules together), ``TYPE_CHECKING`` blocks aside."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # ``from pkg import sub`` imports the module pkg.sub where there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]  # fmt: skip
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _tier(module: str) -> int:
    if module == "selfref_ghn.__main__":
        return len(TIERS)  # ``python -m selfref_ghn``: the command line, above every tier
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "envs":
        return 0  # environments know nothing of SR-GHNs: the bottom tier
    return TIERS.index(parts[1]) if len(parts) > 2 and parts[1] in TIERS else 0


def test_the_walk_sees_the_imports_it_should():
    # a check that finds nothing must be able to find something
    assert "selfref_ghn.evolution.generation" in GRAPH["selfref_ghn.run.loop"]
    assert "selfref_ghn.model.srghn" in GRAPH["selfref_ghn.model.mutation"]
    assert "selfref_ghn.envs._box2d" in GRAPH["selfref_ghn.envs.lunar_lander"]
    assert "selfref_ghn.prng" in GRAPH["selfref_ghn.evolution.rollout"]  # from pkg import mod


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state and m != "selfref_ghn":  # the flat API imports lazily, by name
            visit(m, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_tiers():
    up = [
        f"{m} ({TIERS[_tier(m)] or 'top'}) imports {n} ({TIERS[_tier(n)]})"
        for m, ns in GRAPH.items()
        for n in ns
        if m != "selfref_ghn" and _tier(n) > _tier(m)
    ]
    assert not up, "\n".join(sorted(up))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short(module):
    if module in LONG_ALLOWED:
        return
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module}: {n} lines; split it by concept"
