"""The lock (constraints.txt) must match pyproject.toml's dependency lists.

Why: CI once stayed green on a dependency set that no longer resolved, because it ran with
whatever the machine had installed. The lock is what the README's install uses; these tests
fail when pyproject.toml changes and `.ci/lock` was not run, or when a pin falls outside the
range the package itself declares.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def _deps_hash() -> str:
    spec = importlib.util.spec_from_file_location("deps_hash", ROOT / ".ci" / "deps_hash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.deps_hash(ROOT / "pyproject.toml")


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "oscar-transcoder"]


def test_lock_was_generated_from_this_pyproject():
    header = re.search(r"^# deps-sha256: ([0-9a-f]{64})$", LOCK.read_text(), re.M)
    assert header, "constraints.txt has no deps-sha256 header: regenerate it with .ci/lock"
    assert header.group(1) == _deps_hash(), (
        "pyproject.toml's dependencies changed since constraints.txt was generated: run .ci/lock and commit both"
    )


def test_every_declared_package_is_pinned_inside_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req}"


def test_lock_pins_the_cpu_torch_on_disk():
    # The README installs torch==2.13.0 (this machine's CPU build) first; the lock must agree.
    assert _pins()["torch"] == "2.13.0+cpu"
