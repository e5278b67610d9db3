"""The shape of the code, checked: no import cycles between modules or between subpackages, the
pipeline's layers importing only downwards, the pipeline seeing only the codec's public API,
every module importable alone, inference without training code, and no module so large that
nobody reads it whole (600 lines: a limit that keeps ideas whole, not one that splits them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oscar_model", "pipeline", "jobs")
MAX_LINES = 600
PIPELINE_LAYERS = (
    ("pipeline.batch", "pipeline.cluster", "pipeline.config", "pipeline.faults", "pipeline.storage"),
    ("pipeline.inputs", "pipeline.tables"),
    ("pipeline.stages",),
    ("pipeline.report",),
    ("pipeline.runner",),
    ("pipeline.archive", "pipeline.redecode", "pipeline.audit"),
)
"""The pipeline's layers, lowest first: a module imports its own layer's and lower layers' modules only
(the in-flight batch and storage at the bottom; the jobs, each a plan, at the top)."""
CODEC_API = ("oscar_model", "oscar_model.config", "oscar_model.model_info", "oscar_model.options", "oscar_model.images", "oscar_model.registry", "oscar_model.ssimulacra2",
             "oscar_model.codec", "oscar_model.bitstream", "oscar_model.runtimes", "oscar_model.streams")
"""The codec's modules the pipeline and the jobs may import: its public API."""


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules (a package importing its own submodule lazily, through
    ``__init__``'s name table, is not an edge ast sees), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package's __init__ naming its submodules
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    assert _cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_rows_import_nothing_else_of_the_pipeline():
    assert not {m for m in _graph()["pipeline.tables.schema"] if m.startswith("pipeline")}


def test_inference_modules_never_import_training():
    """The codec's modules never reach oscar_model.train. The ``oscar`` command is the one
    exception: its ``fit-tables`` subcommand imports the table fitting, inside that command only."""
    graph = _graph()
    inference = [m for m in graph if m.startswith("oscar_model") and not m.startswith("oscar_model.train")
                 and m != "oscar_model.cli"]
    offenders = {m: sorted(t for t in graph[m] if t.startswith("oscar_model.train")) for m in inference}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_codec_loads_without_loading_training():
    code = ("import oscar_model, sys; oscar_model.OscarCodec; "
            "assert not any(m.startswith('oscar_model.train') for m in sys.modules), 'training was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_module_imports_alone():
    """Each module imported with none of our others loaded before it (one interpreter, our
    packages dropped from sys.modules between imports): no module leans on another's side effects."""
    names = sorted(_modules())
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        f"    for m in [m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("package", ["oscar_model", "pipeline", "jobs"])
def test_modules_stay_readable(package):
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / package).rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


IMPORT_NAMES = {"pillow": "PIL", "pytorch-msssim": "pytorch_msssim", "scikit-image": "skimage",
                "pillow-jxl-plugin": "pillow_jxl"}
"""Distributions whose import name is not their name with - read as _."""


def _top_level_imports(paths) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.partition(".")[0])
    return found


def test_every_declared_dependency_is_imported():
    """A dependency we declare (core, or an extra users install) is one our code imports; a
    package only another one needs is that package's to declare (peft brings transformers)."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k not in ("test", "docs")}  # tools, run as commands
    declared = {Requirement(r).name for r in [*project["dependencies"], *(r for rs in extras.values() for r in rs)]}
    declared -= {"oscar-transcoder"}
    code = [p for package in (*PACKAGES, "benchmarks") for p in (ROOT / package).rglob("*.py")]
    imported = _top_level_imports(code)
    unused = sorted(d for d in declared if IMPORT_NAMES.get(d, d.replace("-", "_")) not in imported)
    assert not unused, f"declared in pyproject.toml, imported nowhere: {unused}"
