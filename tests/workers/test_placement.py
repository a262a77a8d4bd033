"""Which device the Ray actors get: `models.device` decides, the cluster's GPUs only allow it."""
import pytest

from pipeline.execution.config import load_config
from workers.placement import plan_resources

GPU_CLUSTER = {"CPU": 16.0, "GPU": 2.0}


def plan(device: str, cluster: dict) -> dict:
    return plan_resources(load_config(None, [f"models.device={device}"]), cluster)


def test_cpu_device_reserves_no_gpu_on_a_gpu_cluster():
    p = plan("cpu", GPU_CLUSTER)
    assert all(s["num_gpus"] == 0 and s["device"] == "cpu" for s in p.values())


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:1"])
def test_cuda_or_auto_uses_the_clusters_gpus(device):
    p = plan(device, GPU_CLUSTER)
    assert p["solver"]["num_gpus"] == 1.0 and p["solver"]["device"] == "cuda"
    assert p["severity"]["num_gpus"] == 0.25 and p["severity"]["device"] == "cuda"
    assert p["reader"]["num_gpus"] == p["writer"]["num_gpus"] == 0


def test_auto_without_gpus_runs_on_cpu_and_cuda_without_gpus_fails():
    assert all(s["device"] == "cpu" and s["num_gpus"] == 0 for s in plan("auto", {"CPU": 4.0}).values())
    with pytest.raises(ValueError, match="no GPUs"):
        plan("cuda", {"CPU": 4.0})
