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
    return sorted(p for p in KUBERAY.glob("*.yaml") if p.name != "kustomization.yaml")


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


def _docs(kind: str) -> list[dict]:
    return [d for p in kuberay_manifests() for d in yaml.safe_load_all(p.read_text()) if d and d.get("kind") == kind]


def test_every_local_path_an_entrypoint_names_is_mounted_where_the_driver_runs():
    """A K8sJobMode RayJob's driver runs on the head: a --model /models/... it names must be
    mounted there (it was mounted on the GPU group only, and the driver failed to read it)."""
    clusters = {d["metadata"]["name"]: d for d in _docs("RayCluster")}
    for job in _docs("RayJob"):
        cluster = clusters[job["spec"]["clusterSelector"]["ray.io/cluster"]]
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
        mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])]
        argv = shlex.split(job["spec"]["entrypoint"])
        local = [v for flag, v in zip(argv, argv[1:]) if flag.startswith("--") and v.startswith("/")]
        for path in local:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (job["metadata"]["name"], path)
        volumes = {v["name"] for v in head.get("volumes", [])}
        assert {m["name"] for c in head["containers"] for m in c.get("volumeMounts", [])} <= volumes


def test_token_auth_is_configured_for_the_cluster_and_every_submitter():
    (cluster,) = _docs("RayCluster")
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token"
    for job in _docs("RayJob"):
        env = {e["name"]: e for c in job["spec"]["submitterPodTemplate"]["spec"]["containers"] for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": auth["secretName"], "key": "auth_token"}


def test_kustomization_lists_every_manifest_and_sets_the_one_image_they_use():
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in kuberay_manifests())
    (image,) = kustomization["images"]
    used = {c["image"].split(":")[0] for p in kuberay_manifests() for c in _containers(yaml.safe_load_all(p.read_text()))}
    assert used == {image["name"]}


def _containers(docs) -> list[dict]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            out.extend(c for c in node.get("containers", []) if isinstance(c, dict))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for d in docs:
        walk(d)
    return out
