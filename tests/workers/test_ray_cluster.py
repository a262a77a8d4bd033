"""The Ray engine on two simulated nodes (ray.cluster_utils.Cluster): the job completes."""
import os
import shutil
import tempfile

import pytest

from workers.execute import execute
from pipeline.io.outputs import OutputStore
from tests.helpers import build_tiny_models, tiny_config, write_archive

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="frc", dir="/tmp")  # short: Ray's socket paths have a length limit
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", temp)  # the cluster's address file goes to $RAY_TMPDIR/ray, not /tmp/ray
        os.makedirs(os.path.join(temp, "ray"), exist_ok=True)
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                          "temp_dir": temp})
        c.add_node(num_cpus=2, temp_dir=temp)
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        yield c
        ray.shutdown()
        c.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_two_nodes(cluster, tmp_path):
    models = build_tiny_models(tmp_path / "models")
    archive = write_archive(tmp_path / "archive", n=6, shards=2)
    cfg = tiny_config(models, "execution.engine=ray", "execution.solver_actors=2", "execution.readers=2")
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    summary = execute(cfg, archive, str(tmp_path / "out"))
    rows = OutputStore(str(tmp_path / "out")).read_metrics().to_pylist()
    assert summary["ok"] == 6 and sorted(r["key"] for r in rows) == [f"s{i:04d}" for i in range(6)]
    assert summary["actors"]["solve"] == 2
