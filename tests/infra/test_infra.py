"""The cluster configs load, carry what their tools require, and run the same command.

The cluster launcher YAML is checked against Ray's own schema (ray/autoscaler/ray-schema.json)
and must offer a GPU worker type; the KubeRay RayJob must have the fields the operator reads
and a GPU worker group; the container image must be Ray's own at the installed version and
must not override the entrypoint (Ray runs `ray start` in it). All name `flash-restore restore`.
"""
import json
import re
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMMAND = "flash-restore restore"


def test_cluster_launcher_config_passes_rays_schema_and_has_a_gpu_worker():
    import jsonschema
    import ray.autoscaler

    cfg = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__path__[0]) / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert any(t.get("resources", {}).get("GPU", 0) >= 1 and t.get("max_workers", 0) >= 1 for t in types.values())
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert COMMAND in (INFRA / "ray-cluster.yaml").read_text()


def test_kuberay_rayjob_has_what_the_operator_reads():
    job = yaml.safe_load((INFRA / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith(COMMAND)
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] and "rayStartParams" in cluster["headGroupSpec"]
    groups = cluster["workerGroupSpecs"]
    assert all(g["groupName"] and "rayStartParams" in g and g["template"]["spec"]["containers"] for g in groups)
    gpu = [g for g in groups if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                                    for c in g["template"]["spec"]["containers"])]
    assert gpu and gpu[0]["maxReplicas"] >= gpu[0]["minReplicas"]


def test_container_image_matches_the_installed_ray_and_keeps_rays_entrypoint():
    import ray

    docker = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)", docker, re.M)
    assert base and base.group(1).startswith(ray.__version__ + "-")
    assert not re.search(r"^ENTRYPOINT", docker, re.M)
    assert re.search(r"pip install .*-e \.", docker)
    job = yaml.safe_load((INFRA / "kuberay-rayjob.yaml").read_text())
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
    images = {yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())["docker"]["image"],
              job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]}
    assert len(images) == 1  # one image for launcher and KubeRay
    assert COMMAND in docker
