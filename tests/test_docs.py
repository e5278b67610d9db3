"""The documentation, checked: a short README for users, a site that builds in strict mode, no flag
the docs name that no command has, and every column of every table documented."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LAB_NOTEBOOK = re.compile(r"this (2-core )?(machine|box|CPU)|No GPU was lent|\b20\d\d-[01]\d-[0-3]\d\b", re.I)
OTHER_TOOLS_FLAGS = {
    "--strict",  # mkdocs build
    "--dry-run", "--find-links", "--all-extras", "--exclude-newer",  # pip, uv
    "--address", "--working-dir", "--head", "--port", "--num-cpus", "--dashboard-host",  # ray
    "--from-literal",  # kubectl
    "--headless", "--screenshot",  # chromium
    "--mixed_precision",  # the authors' release's test script
}
"""Flags the docs quote from other tools' command lines (pip, uv, ray, kubectl, chromium, mkdocs, the release)."""


def test_the_readme_is_a_short_users_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[test]"' in text
    assert "python -m pytest -q" in text
    assert [line for line in text.splitlines() if LAB_NOTEBOOK.search(line)] == []


def test_ci_runs_the_readmes_two_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[test]"' in ci
    assert "python -m pytest -q" in ci


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    """A broken link, a missing page or a generated page that fails aborts the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = (tmp_path / "site" / "tables" / "index.html").read_text()
    assert "<code>matched_gap</code>" in tables and "<code>committed_at</code>" in tables
    assert "corpus_scale_rss" in (tmp_path / "site" / "results" / "index.html").read_text()


def _declared_flags() -> set[str]:
    """Every option string an argparse parser of the project declares (its --help lists it)."""
    found = {"--help"}
    for path in [*ROOT.glob("jobs/*.py"), *ROOT.glob("oscar_model/**/*.py"), *ROOT.glob("benchmarks/*.py"),
                 *ROOT.glob("infra/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                found |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return found


def test_every_flag_the_docs_name_exists():
    declared = _declared_flags()
    assert "--slice-images" in declared and "--threads" in declared  # the scan sees the shared declarations
    named = {}
    for path in DOC_FILES:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", path.read_text()):
            named.setdefault(flag, path.name)
    missing = {f: where for f, where in named.items() if f not in declared and f not in OTHER_TOOLS_FLAGS}
    assert missing == {}


def test_the_flag_check_finds_an_unknown_flag():
    assert "--read-batch-size" not in _declared_flags()


@pytest.mark.parametrize("table", ["bitstreams", "metrics", "errors", "bd_rates", "work_units"])
def test_every_column_is_documented(table):
    from pipeline.tables.schema import describe

    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    from generated import columns_markdown

    doc, columns = describe(table)
    assert doc and all(text for _, _, text in columns)
    page = columns_markdown()
    assert all(f"| `{name}` |" in page for name, _, _ in columns)
