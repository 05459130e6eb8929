"""The import graph of ``src/loadopt``, read with ``ast`` (nothing is imported): no cycle between
modules and no import from a lower layer to a higher one (docs/architecture.md).

Every import counts, at module level or inside a function (a deferred import is still a
dependency, and a deferred cycle is still a cycle), as does one under ``if TYPE_CHECKING:``.
An edge goes to the module imported: ``from .compile import compile_problem`` depends on the
package ``loadopt.compile`` (its ``__init__``), ``from .compile import core`` on
``loadopt.compile.core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers of docs/architecture.md, lowest first: a module may import its own layer or a
#: lower one (never a higher one). A prefix covers a package and everything in it. Every module
#: must be listed: a new one is placed here on purpose.
LAYERS: tuple[tuple[str, ...], ...] = (
    # 0 inputs: validated objects, errors, time, wiring physics
    (
        "loadopt.errors",
        "loadopt._base",
        "loadopt.site",
        "loadopt.session",
        "loadopt.signals",
        "loadopt.objective",
        "loadopt.horizon",
        "loadopt.wiring",
    ),
    # 1 the compiled problem (arrays only)
    ("loadopt.problem", "loadopt._csr"),
    # 2 safety on arrays: projection and check, pilot steps, grid signals as arrays
    ("loadopt.safety", "loadopt.pilots", "loadopt.grid.arrays"),
    # 3 engines: compile, the LP, solver backends, the fast path, the schedule and its KPIs
    (
        "loadopt.compile",
        "loadopt.lp",
        "loadopt.solvers",
        "loadopt.fast",
        "loadopt.schedule",
        "loadopt.grid.compliance",
    ),
    # 4 the pipeline: options, the MILP, solve()
    ("loadopt.options", "loadopt.milp", "loadopt.solve"),
    # 5 control: planners and the rolling-horizon controller
    ("loadopt.planner", "loadopt.controller"),
    # 6 edges: protocols, fleets, simulation, data, pictures, the CLI, the package's exports
    (
        "loadopt",
        "loadopt.grid",
        "loadopt.ocpp",
        "loadopt.fleet",
        "loadopt.simulate",
        "loadopt.acn",
        "loadopt.synthetic",
        "loadopt.scenario",
        "loadopt.plot",
        "loadopt.cli",
    ),
)


def modules(src: Path, top: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) under ``src/top``."""
    out = {}
    for path in sorted((src / top).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_graph(src: Path, top: str) -> dict[str, set[str]]:
    """Module -> the modules of ``top`` it imports (anywhere in the file)."""
    mods = modules(src, top)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        package = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:  # ``from pkg import submodule`` depends on the submodule
                    sub = f"{target}.{a.name}"
                    targets.append(sub if sub in mods else target)
            for t in targets:
                # ``import loadopt.x.y`` depends on the longest module prefix that exists
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The layer of the longest matching prefix (``None``: not placed)."""
    best: tuple[int, int] | None = None
    for k, prefixes in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (k, len(p))
    return None if best is None else best[0]


def upward(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer to a higher one, as ``"a (k) -> b (j)"``."""
    out = []
    for a in sorted(graph):
        la = layer_of(a, layers)
        for b in sorted(graph[a]):
            lb = layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({la}) -> {b} ({lb})")
    return out


GRAPH = import_graph(SRC, "loadopt")


def test_the_graph_is_read():
    # a sanity floor: the reader sees the package and its known edges
    assert len(GRAPH) > 60
    assert "loadopt.compile" in GRAPH["loadopt.controller.core"]
    assert "loadopt.compile.core" in GRAPH["loadopt.compile"]
    assert "loadopt.safety" in GRAPH["loadopt.compile.series"]  # a deferred import counts


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if layer_of(m) is None] == []


def test_no_upward_import():
    assert upward(GRAPH) == []


def test_core_layers_never_import_the_edges():
    """The example of the rule spelled out: nothing below the controller imports a protocol
    adapter, the fleet, the simulator or the CLI."""
    edges = ("loadopt.ocpp", "loadopt.fleet", "loadopt.cli", "loadopt.simulate", "loadopt.plot")
    bad = [
        f"{a} -> {b}"
        for a, deps in GRAPH.items()
        if (layer_of(a) or 0) <= 5
        for b in deps
        if any(b == e or b.startswith(e + ".") for e in edges)
    ]
    assert bad == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The checker on a small package built to break both rules (so the tests above can fail)."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .low import f\n",
            "pkg/low.py": "def f():\n    from .high import g\n    return g\n",
            "pkg/high.py": "from pkg.mid import h\n",
            "pkg/mid.py": "from . import low\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/leaf.py": "import pkg.sub\nfrom ..low import f\n",
        },
    )
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.low"] == {"pkg.high"}  # deferred, relative
    assert g["pkg.mid"] == {"pkg.low"}  # ``from . import module``
    assert g["pkg.sub.leaf"] == {"pkg.sub", "pkg.low"}  # absolute, two dots up
    assert cycles(g) == [["pkg.high", "pkg.low", "pkg.mid"]]
    layers = (("pkg.low", "pkg.sub"), ("pkg.mid", "pkg.high"), ("pkg",))
    assert upward(g, layers) == ["pkg.low (0) -> pkg.high (1)"]
    assert layer_of("pkg.sub.leaf", layers) == 0
    assert layer_of("other", layers) is None


def test_a_layer_is_the_longest_prefix():
    assert layer_of("loadopt.grid.arrays") == 2  # not the edge package loadopt.grid (6)
    assert layer_of("loadopt.grid.openadr3") == 6
    assert layer_of("loadopt.compile.core") == 3
