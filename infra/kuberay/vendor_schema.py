"""Re-vendors KubeRay's CRD schemas into infra/kuberay/schema/ (what tests/test_manifests.py
validates the manifests against).

    python infra/kuberay/vendor_schema.py /path/to/a/kuberay/checkout

Writes the ray.io/v1 ``openAPIV3Schema`` of the RayCluster and RayJob CRDs as minified JSON,
with the commit it came from in ``$comment``. KubeRay is Apache-2.0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).with_name("schema")


def main(checkout: str) -> None:
    commit = subprocess.check_output(["git", "-C", checkout, "rev-parse", "HEAD"], text=True).strip()
    for kind, name in (("rayclusters", "RayCluster"), ("rayjobs", "RayJob")):
        source = f"ray-operator/config/crd/bases/ray.io_{kind}.yaml"
        crd = yaml.safe_load((Path(checkout) / source).read_text())
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
        note = (f"openAPIV3Schema of KubeRay's {name} CRD, version ray.io/v1, from ray-project/kuberay {source} "
                f"at commit {commit} (Apache-2.0). Regenerate with infra/kuberay/vendor_schema.py.")
        OUT.mkdir(exist_ok=True)
        (OUT / f"{kind}.v1.json").write_text(json.dumps({"$comment": note, **schema}, separators=(",", ":"), sort_keys=True))
        print(f"{OUT / f'{kind}.v1.json'}: {name} at {commit[:12]}")


if __name__ == "__main__":
    main(sys.argv[1])
