"""`workers.estimate`: the severity pass is the restore job's own stages and scheduler, so what
it prices is what the job will run: the same start steps and the same error rows, key by key."""
from collections import Counter

import pytest

from pipeline.io.outputs import OutputStore
from pipeline.io.shards import list_shards, write_shard
from tests.helpers import archive_samples, build_tiny_models, tiny_config
from workers.estimate import sampled, severity_records
from workers.execute import execute


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimate")
    samples = archive_samples(8)
    write_shard(str(root / "in" / "a.tar"), samples[:5] + [{"__key__": "bad", "png": b""}])
    write_shard(str(root / "in" / "b.tar"), [samples[2]] + samples[5:])   # s0002 again: a duplicate
    return build_tiny_models(root / "models"), str(root / "in")


def test_severity_records_are_the_jobs_start_steps_and_error_rows(setup, tmp_path):
    models, archive = setup
    cfg = tiny_config(models)
    _, records, invalid, seen, _ = severity_records(cfg, list_shards(archive), 1.0, cfg.seed)
    assert [r.key for r in records] == [f"s{i:04d}" for i in range(8)]   # read order, the duplicate once
    assert seen == 10 and invalid == {"empty": 1, "duplicate": 1}
    assert not any(tmp_path.iterdir())   # nothing written

    execute(cfg, archive, str(tmp_path / "out"))
    rows = OutputStore(str(tmp_path / "out")).read_metrics().to_pylist()
    assert {r.key: r.start_step for r in records} == {r["key"]: r["start_step"] for r in rows if r["status"] == "ok"}
    assert invalid == Counter(r["error_kind"] for r in rows if r["status"] == "error")


def test_a_sample_fraction_reads_the_seeded_keys_with_the_same_start_steps(setup):
    models, archive = setup
    cfg = tiny_config(models)
    _, every, _, _, _ = severity_records(cfg, list_shards(archive), 1.0, cfg.seed)
    _, half, _, seen, _ = severity_records(cfg, list_shards(archive), 0.5, cfg.seed)
    chosen = [r.key for r in every if sampled(r.key, 0.5, cfg.seed)]
    assert 0 < len(chosen) < len(every) and [r.key for r in half] == chosen
    assert {r.key: r.start_step for r in half} == {r.key: r.start_step for r in every if r.key in chosen}
    assert seen == len(chosen) + sampled("bad", 0.5, cfg.seed) + sampled("s0002", 0.5, cfg.seed)


def test_each_family_is_priced_on_the_sampler_it_runs(setup, tmp_path):
    """jpeg and downsample restore on the table's short DDIM path, the blurs on DDPM's: the estimate's
    NFE is the job's, sample by sample, not every start read on the job's default grid."""
    from workers.estimate import build_report

    models, archive = setup
    cfg = tiny_config(models)
    report = build_report(cfg, archive, list_shards(archive))
    execute(cfg, archive, str(tmp_path / "out"))
    rows = [r for r in OutputStore(str(tmp_path / "out")).read_metrics().to_pylist() if r["status"] == "ok"]
    assert {r["operator"] for r in rows} >= {"jpeg", "downsample", "gaussian_blur"}
    assert report["solvers"]["ldps"]["predicted_nfe_total"] == sum(r["nfe"] for r in rows)
