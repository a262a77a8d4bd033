"""Transient object-storage faults between the job and the S3 server: retried with backoff,
nothing lost, nothing duplicated, and the same results as a run that saw no fault."""
import json
import os

import pytest

from pipeline.io.outputs import OutputStore
from pipeline.io.storage import retry_policy
from tests.helpers import engine_setup, output_images, tiny_config
from tests.io.s3_fault_proxy import FAULT_KINDS, FaultProxy
from workers.execute import execute


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return engine_setup(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def faulty_s3(s3_server, monkeypatch):
    """A FaultProxy in front of moto, no faults until a test sets `every` or arms one; the
    S3 clients created meanwhile talk to the proxy."""
    import s3fs

    with FaultProxy(s3_server, every=0) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        s3fs.S3FileSystem.clear_instance_cache()
        yield proxy
    s3fs.S3FileSystem.clear_instance_cache()


def _rows(out: str) -> dict:
    return {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}


def test_every_fault_kind_is_retried_and_the_job_matches_a_clean_run(setup, s3_bucket, faulty_s3, tmp_path):
    import s3fs

    root, models, archive = setup
    fs = s3fs.S3FileSystem()
    for name in sorted(os.listdir(archive)):
        fs.put(os.path.join(archive, name), f"{s3_bucket}/in/{name}")
    cfg = tiny_config(models, "execution.part_size=2")
    clean = str(tmp_path / "clean")
    execute(cfg, archive, clean)

    out = f"s3://{s3_bucket}/out"
    faulty_s3.every = 3  # from here on every third request fails, each kind in turn
    summary = execute(cfg, f"s3://{s3_bucket}/in", out)
    again = execute(cfg, f"s3://{s3_bucket}/in", out)
    faulty_s3.every = 0

    injected = faulty_s3.injected
    assert set(injected) == set(FAULT_KINDS) and min(injected.values()) >= 2, injected
    assert summary["ok"] == 9 and summary["errors"] == 0
    assert again["samples"] == 0 and again["skipped_already_done"] == 9
    table = OutputStore(out).read_metrics()
    assert sorted(table.column("key").to_pylist()) == [f"s{i:04d}" for i in range(9)]  # once each
    manifest = OutputStore(out).read_manifest()
    assert manifest["counts"] == {"ok": 9, "error": 0} and len(manifest["parts"]) == 5
    expected, got = _rows(clean), _rows(out)
    for key, row in expected.items():
        assert (got[key]["status"], got[key]["nfe"], got[key]["start_step"]) == \
            (row["status"], row["nfe"], row["start_step"])
    ref, images = output_images(clean), output_images(out)
    assert set(images) == set(ref) and all((images[k] == ref[k]).all() for k in ref)


def test_a_conditional_write_whose_answer_was_lost_counts_as_written(s3_bucket, faulty_s3):
    """The server stores the manifest, the connection resets before the client hears it, the
    retry fails its If-Match: the store sees its own bytes there and goes on."""
    url = f"s3://{s3_bucket}/job"
    store = OutputStore(url)
    manifest = store.prepare("h")
    manifest["counts"]["ok"] = 7
    faulty_s3.arm("reset_after")
    store._write_manifest(manifest)
    assert faulty_s3.injected["reset_after"] == 1
    assert OutputStore(url).read_manifest()["counts"]["ok"] == 7
    manifest["counts"]["ok"] = 8  # the store's ETag is the landed one: the next write is accepted
    store._write_manifest(manifest)
    assert json.loads(store.fs.cat(store.path("_manifest.json")))["counts"]["ok"] == 8


def test_retry_policy_reads_the_standard_aws_variables(monkeypatch):
    assert retry_policy() == {"mode": "standard", "total_max_attempts": 10}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert retry_policy() == {"mode": "adaptive", "total_max_attempts": 3}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="AWS_MAX_ATTEMPTS"):
        retry_policy()
