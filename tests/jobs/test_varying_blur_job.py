"""varying_blur has no shipped severity encoder: the default config leaves it out, and a job that names one
(the Gaussian-blur encoder, `models.severity.varying_blur=…/severity-gaussian_blur`) restores its samples.

Tiny random models (tests/helpers.py); the job runs through the CLI on the local backend."""
from __future__ import annotations

from typer.testing import CliRunner

from jobs.cli import app
from pipeline.execution.config import load_config
from pipeline.io.outputs import OutputStore
from pipeline.io.shards import write_shard
from tests.helpers import archive_samples, build_tiny_models


def test_default_config_has_no_varying_blur_encoder():
    assert "varying_blur" not in load_config(None, []).models.severity


def test_a_job_restores_varying_blur_with_the_gaussian_encoder(tmp_path):
    models = tmp_path / "models"
    overrides = [o for o in build_tiny_models(models)["overrides"] if not o.startswith("models.severity.varying_blur")]
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(4, families=("varying_blur", "gaussian_blur")))
    runner = CliRunner()

    def restore(out: str, *extra: str) -> list[dict]:
        sets = [a for o in (*overrides, *extra) for a in ("--set", o)]
        res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / out),
                                  "--engine", "local", "--batch-size", "2", *sets])
        assert res.exit_code == 0, res.output + repr(res.exception)
        return OutputStore(str(tmp_path / out)).read_metrics().to_pylist()

    # no encoder named for the family: its samples are error rows, the others restore
    rows = {r["key"]: r for r in restore("none")}
    varying, gaussian = ("s0000", "s0002"), ("s0001", "s0003")   # archive_samples alternates the families
    assert sorted(rows) == sorted(varying + gaussian)
    assert all(rows[k]["status"] == "error" and "no severity encoder" in rows[k]["error"] for k in varying), rows
    assert all(rows[k]["status"] == "ok" and rows[k]["operator"] == "gaussian_blur" for k in gaussian)
    # the Gaussian-blur encoder named for it: every sample restores, with its σ̂² and start step
    rows = restore("gauss", f"models.severity.varying_blur={models / 'severity-gaussian_blur'}")
    assert len(rows) == 4 and all(r["status"] == "ok" and r["psnr"] is not None for r in rows), rows
    assert {r["operator"] for r in rows} == {"varying_blur", "gaussian_blur"}
    assert all(r["sigma2_hat"] is not None and r["nfe"] == r["start_step"] + 1 for r in rows)
    hashes = {r["operator"]: r["model_hash"] for r in rows}
    assert hashes["varying_blur"] == hashes["gaussian_blur"]     # one encoder serves both families
