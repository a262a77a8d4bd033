"""The Ray engine end to end on tiny real models: equal to the local engine, S3 in and out,
a solver killed mid-job, an interrupted job resumed (bad inputs: tests/workers/test_hostile_archives.py).

One local Ray instance serves the module (`ray_local` in conftest; starting Ray costs ~20 s
on the 2-core box).
"""
import collections
import os
from dataclasses import replace

import numpy as np
import pytest

from workers.execute import execute
from pipeline.io.outputs import CommitConflict, OutputStore, PartBuffer
from tests.helpers import engine_setup, output_images, tiny_config

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return engine_setup(tmp_path_factory.mktemp("rayengine"))


def config(models, *extra):
    return tiny_config(models, "execution.engine=ray", "execution.part_size=4", *extra)


def rows_of(out) -> list[dict]:
    return OutputStore(out).read_metrics().to_pylist()


def assert_exactly_once(rows, keys):
    counts = collections.Counter(r["key"] for r in rows)
    assert all(counts[k] == 1 for k in keys), {k: counts[k] for k in keys if counts[k] != 1}


def test_matches_local_engine(ray_local, setup, tmp_path):
    """Bad inputs of every kind on both backends: tests/workers/test_hostile_archives.py."""
    root, models, mixed = setup
    cfg = config(models, "models.dtype=float64")
    progress = []
    summary = execute(cfg, mixed, str(tmp_path / "ray"), on_progress=lambda s: progress.append(s.processed))
    local = execute(replace(cfg, execution=replace(cfg.execution, engine="local")), mixed, str(tmp_path / "local"))
    rows, ref = rows_of(str(tmp_path / "ray")), rows_of(str(tmp_path / "local"))
    triple = lambda rs: collections.Counter((r["key"], r["status"], r["error_kind"]) for r in rs)  # noqa: E731
    assert triple(rows) == triple(ref)
    by_key = {r["key"]: r for r in rows if r["status"] == "ok"}
    for r in ref:
        if r["status"] == "ok":
            assert (by_key[r["key"]]["nfe"], by_key[r["key"]]["start_step"]) == (r["nfe"], r["start_step"])
    assert_exactly_once(rows, [f"s{i:04d}" for i in range(9)])
    got, want = output_images(str(tmp_path / "ray")), output_images(str(tmp_path / "local"))
    assert got.keys() == want.keys() and len(got) == summary["ok"] == local["ok"]
    assert max(np.abs(got[k] - want[k]).max() for k in got) <= 1.0
    assert summary["errors"] == local["errors"] and summary["errors_by_kind"] == local["errors_by_kind"]
    assert summary["committed"] == local["committed"] and progress and progress[-1] == summary["samples"]
    assert set(summary["busy_fraction"]) == {"read", "severity", "solve", "write"}
    assert summary["busy_fraction"]["solve"] > 0 and summary["actor_restarts"]["solver"] == 0
    assert summary["driver_bytes_per_sample"] < 1024  # records and references, not the 3 KiB images
    stats = OutputStore(str(tmp_path / "ray")).read_manifest()
    assert stats["counts"] == summary["committed"]


class Interrupt(Exception):
    pass


def test_interrupted_job_resumes_through_a_solver_crash(ray_local, setup, tmp_path, monkeypatch):
    """Run 1 stops after a committed part; run 2 loses its solver process on its first batch
    (with more in flight), as a lost node or OOM kill would, and still finishes; run 3 is a
    no-op. No duplicates, no loss. The crash comes from a test subclass of the solver actor,
    so the production actor carries no fault-injection hook."""
    import workers.ray_backend
    import workers.solver

    root, models, archive = setup
    cfg = config(models, "execution.part_size=2", "execution.batch_size=2", "execution.bucket_width=100")
    out = str(tmp_path / "out")

    def stop(stats):
        if stats.processed >= 3:  # the writer has committed at least one part of 2
            raise Interrupt()

    with pytest.raises(Interrupt):
        execute(cfg, archive, out, on_progress=stop)
    first = rows_of(out)
    assert 2 <= len(first) < 9  # writes already queued at the writer may commit before it is killed
    marker = str(tmp_path / "crashed")

    class CrashingSolver(workers.solver.SolverStage):
        def solve(self, records, *payloads):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().solve(records, *payloads)

    monkeypatch.setattr(workers.ray_backend, "SolverStage", CrashingSolver)   # the class the backend places
    summary = execute(cfg, archive, out)
    monkeypatch.undo()
    assert os.path.exists(marker)
    assert summary["actor_restarts"]["solver"] == 1 and summary["resubmitted_calls"]["solver"] >= 1
    rows = rows_of(out)
    assert summary["skipped_already_done"] == len(first) and summary["samples"] == 9 - len(first)
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    assert_exactly_once(rows, [f"s{i:04d}" for i in range(9)])
    again = execute(cfg, archive, out)
    assert again["samples"] == 0 and again["skipped_already_done"] == 9 and len(rows_of(out)) == 9


def test_s3_input_and_output(ray_local, setup, s3_bucket):
    import s3fs

    root, models, archive = setup
    fs = s3fs.S3FileSystem()
    for name in sorted(os.listdir(archive)):
        fs.put(os.path.join(archive, name), f"{s3_bucket}/in/{name}")
    out = f"s3://{s3_bucket}/out"
    summary = execute(config(models), f"s3://{s3_bucket}/in", out)
    assert summary["ok"] == 9 and summary["parts_committed"] == 3
    rows = rows_of(out)
    assert len(rows) == 9 and all(r["status"] == "ok" and r["image_url"].startswith(out) for r in rows)
    assert_exactly_once(rows, [f"s{i:04d}" for i in range(9)])
    assert len(output_images(out)) == 9


def test_s3_commit_cannot_overwrite_another_writers_commit(s3_bucket):
    url = f"s3://{s3_bucket}/job"
    a, b = OutputStore(url), OutputStore(url)
    ma = a.prepare("h")
    mb = b.prepare("h")
    part = PartBuffer()
    part.add({"key": "k", "shard": "s", "status": "ok"}, b"png", {})
    a.commit(part, ma)
    with pytest.raises(CommitConflict):
        b.commit(part, mb)  # same part name: refused, and the manifest a wrote stands
    assert OutputStore(url).read_manifest()["counts"] == {"ok": 1, "error": 0}
    assert OutputStore(url).done_keys() == {"k"}


def test_resources_fit_the_cluster(setup):
    from workers.placement import plan_resources

    root, models, archive = setup
    cfg = config(models, "execution.solver_actors=2", "execution.readers=2")  # 6 actors
    cpu_only = plan_resources(cfg, {"CPU": 2.0})
    assert all(p["num_gpus"] == 0 and p["device"] == "cpu" for p in cpu_only.values())
    counts = {"reader": 2, "severity": 1, "solver": 2, "writer": 1}
    assert sum(n * cpu_only[s]["num_cpus"] for s, n in counts.items()) <= 2.0  # a 2-core box cannot deadlock
    assert cpu_only["solver"]["num_cpus"] == 2 * cpu_only["reader"]["num_cpus"]  # the solver weighs double
    small_nodes = plan_resources(cfg, {"CPU": 2.0}, smallest_node_cpus=1.0)  # all of them fit on one node
    assert sum(n * small_nodes[s]["num_cpus"] for s, n in counts.items()) <= 1.0
    one_gpu = plan_resources(config(models), {"CPU": 16.0, "GPU": 1.0})
    assert one_gpu["solver"]["num_gpus"] == 1.0 and one_gpu["solver"]["device"] == "cuda"
    assert one_gpu["severity"]["num_gpus"] == 0 and one_gpu["severity"]["device"] == "cpu"
    two = plan_resources(config(models, "execution.gpus_per_solver=0.5"), {"CPU": 16.0, "GPU": 1.0})
    assert two["solver"]["num_gpus"] == 0.5 and two["severity"]["num_gpus"] == 0.25
