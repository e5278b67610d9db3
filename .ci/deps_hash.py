"""SHA-256 of pyproject.toml's dependency lists: what constraints.txt was compiled from.

`.ci/lock` writes it into the lock's header and tests/test_lock.py recomputes it, so a change
to the dependencies without a regenerated lock fails the test suite. Only the lists count
(requires-python, dependencies, every extra), normalised, so comments and formatting do not.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import tomllib


def deps_hash(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    lists = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
    }
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    print(deps_hash(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
