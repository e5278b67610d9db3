"""The cluster manifests are checked: KubeRay ones against KubeRay's CRD schema (vendored in
infra/kuberay/schema/), the cluster-launcher one against Ray's own schema, and every job
entrypoint they name against that job's argument parser."""

from __future__ import annotations

import copy
import importlib
import json
import os
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "infra" / "kuberay"
LAUNCHER = ROOT / "infra" / "cluster-launcher"
SCHEMAS = {"RayCluster": "rayclusters.v1.json", "RayJob": "rayjobs.v1.json"}


def kuberay_manifests() -> list[Path]:
    return sorted(KUBERAY.glob("*.yaml"))


def schema_for(kind: str) -> dict:
    return json.loads((KUBERAY / "schema" / SCHEMAS[kind]).read_text())


def entrypoints() -> list[str]:
    """Every ``python -m jobs.<job> ...`` command the manifests name."""
    out = []
    for path in [*kuberay_manifests(), *LAUNCHER.glob("*.yaml")]:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "RayJob":
                out.append(doc["spec"]["entrypoint"])
    return out


@pytest.mark.parametrize("path", kuberay_manifests(), ids=lambda p: p.name)
def test_kuberay_manifest_is_valid_against_the_crd_schema(path):
    for doc in yaml.safe_load_all(path.read_text()):
        assert doc["apiVersion"] == "ray.io/v1"
        jsonschema.validate(doc, schema_for(doc["kind"]))


def test_the_raycluster_has_an_autoscaled_gpu_group_and_sized_object_stores():
    cluster = yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] > 0
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    assert all(int(g["rayStartParams"]["object-store-memory"]) > 0 for g in groups)


def test_the_schema_check_catches_a_broken_manifest():
    cluster = yaml.safe_load((KUBERAY / "raycluster.yaml").read_text())
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema_for("RayCluster"))
    del cluster["spec"]["headGroupSpec"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, schema_for("RayCluster"))


def test_the_cluster_launcher_config_is_valid_against_rays_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    for path in LAUNCHER.glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        jsonschema.validate(config, schema)
        assert config["available_node_types"]["gpu"]["max_workers"] > config["available_node_types"]["gpu"]["min_workers"]
        assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("command", entrypoints())
def test_every_entrypoint_names_a_job_whose_parser_takes_its_flags(command):
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
    job = importlib.import_module(argv[2])
    args = job.build_parser().parse_args(argv[3:])  # a flag it does not know exits here
    assert args.output
    with pytest.raises(SystemExit) as help_exit:
        job.main(["--help"])
    assert help_exit.value.code == 0


def test_the_manifests_name_all_three_jobs():
    assert {shlex.split(c)[2] for c in entrypoints()} == {"jobs.archive", "jobs.audit", "jobs.redecode"}
    assert os.path.getsize(KUBERAY / "schema" / "rayjobs.v1.json") > 10_000  # the real schema, not a stub
