"""The package's shape: no import cycles (counting imports inside functions too), the layers import only what is
below them, and the command line stays light."""
import ast
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "textebm"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str, path: Path, known: set) -> set:
    """The textebm modules that ``name`` imports anywhere in its file (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[:len(base) - node.level + 1]
                mod = ".".join(root + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("textebm") and t != name:
                out.add(t)
    return out


def graph() -> dict:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    found = cycles(graph())
    assert not found, found


def third_party(path: Path) -> set:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add((node.module or "").split(".")[0])
    return out - set(sys.stdlib_module_names) - {"textebm", "__future__"}


def test_the_prior_and_the_samplers_need_only_torch():
    g = graph()
    for name, path in modules().items():
        if name in ("textebm.prior", "textebm.energy") or name.startswith("textebm.sampling"):
            assert third_party(path) <= {"torch"}, (name, third_party(path))
            # samplers never import a model; the energy base only the samplers; the prior only those two
            allowed = ("textebm.sampling", "textebm.energy") if name == "textebm.prior" else ("textebm.sampling",)
            inside = {m for m in g[name] if not m.startswith(allowed)}
            assert not inside, (name, inside)


def test_help_answers_fast():
    env_cmd = [sys.executable, "-m", "textebm", "--help"]
    subprocess.run(env_cmd, capture_output=True, check=True)  # warm the file cache
    best = min(_timed(env_cmd) for _ in range(3))
    assert best < 0.5, best


def _timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t


def test_help_imports_nothing_heavy():
    code = ("import sys; import textebm.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'datasets', 'kenlm', 'matplotlib', "
            "'sentencepiece', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_tests_mirror_the_package():
    """Each folder of tests/ is named after a subpackage of textebm, and no two test files share a name (the folders
    have no __init__.py, so pytest imports test files by their base name)."""
    tests = ROOT / "tests"
    folders = sorted(p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    assert folders and all((PKG / f / "__init__.py").is_file() for f in folders), folders
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
    assert not list(tests.rglob("__init__.py"))
