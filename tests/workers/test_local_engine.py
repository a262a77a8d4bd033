"""The in-process engine end to end on tiny real models: outputs, resume, exactness, bad samples."""
import pytest

from workers.execute import execute
from pipeline.io.outputs import OutputStore
from tests.helpers import FAMILY_PARAMS, engine_setup, output_images, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return engine_setup(tmp_path_factory.mktemp("engine"))


def test_restores_every_sample_once_and_reruns_as_noop(setup, tmp_path):
    root, models, archive = setup
    cfg = tiny_config(models)
    out = str(tmp_path / "out")
    summary = execute(cfg, archive, out)
    assert summary["ok"] == 9 and summary["errors"] == 0
    assert 0 < summary["startup_seconds"] < summary["wall_seconds"]  # model loading, reported apart
    assert summary["images_per_s_after_startup"] > summary["images_per_s"]
    tuned = ("downsample", "gaussian_blur", "inpainting", "jpeg", "motion_blur", "nonlinear_blur")   # the shipped table's
    borrowed = {"varying_blur": "gaussian_blur"}                  # Operator.settings_of: a relative's tuned entry
    assert {f: (s["entry"], s["source"]) for f, s in summary["solver_settings"].items()} == {
        f: (f"ldps/{borrowed.get(f, f)}/flash", "tuned" if f in tuned or f in borrowed else "defaults")
        for f in FAMILY_PARAMS}
    table = OutputStore(out).read_metrics()
    keys = table.column("key").to_pylist()
    assert sorted(keys) == [f"s{i:04d}" for i in range(9)]
    rows = table.to_pylist()
    for r in rows:
        assert r["status"] == "ok" and r["nfe"] == r["start_step"] + 1 == r["denoiser_calls"]
        assert r["psnr"] is not None and r["ssim"] is not None and r["lpips"] is None
        assert "lpips" in r["metrics_missing"] and "severity_ood" in r["metrics_missing"]  # tiny models: no range
        assert r["residual"] > 0 and r["residual_z"] > 0  # no-reference quality on every ok row
        assert r["config_hash"] == cfg.output_hash() and r["model_hash"]
    again = execute(cfg, archive, out)
    assert again["samples"] == 0 and again["skipped_already_done"] == 9
    assert len(OutputStore(out).read_metrics()) == 9


def test_batch_size_does_not_change_outputs(setup, tmp_path):
    root, models, archive = setup
    # float64: batch shapes change float32 convolution rounding (~3e-6), enough to flip an 8-bit pixel
    a = execute(tiny_config(models, "execution.batch_size=1", "models.dtype=float64"), archive, str(tmp_path / "a"))
    b = execute(tiny_config(models, "execution.batch_size=5", "execution.bucket_width=100", "models.dtype=float64"),
                  archive, str(tmp_path / "b"))
    assert a["ok"] == b["ok"] == 9
    a_img, b_img = output_images(str(tmp_path / "a")), output_images(str(tmp_path / "b"))
    assert a_img.keys() == b_img.keys() and all((a_img[k] == b_img[k]).all() for k in a_img)


def test_baseline_runs_full_schedule(setup, tmp_path):
    root, models, archive = setup
    execute(tiny_config(models, "flash.enabled=false", "solver.name=unconditional"), archive, str(tmp_path / "o"))
    rows = OutputStore(str(tmp_path / "o")).read_metrics().to_pylist()
    assert {r["nfe"] for r in rows} == {50} and all(r["sigma2_hat"] is None for r in rows)


def test_severity_encoder_of_another_autoencoder_fails_before_compute(setup, tmp_path):
    from pipeline.models.model_store import load_model, save_model

    root, models, archive = setup
    enc = load_model(str(root / "models" / "severity-inpainting"))
    save_model(enc, str(tmp_path / "sev"), extra={"autoencoder_fingerprint": "0123456789abcdef"})
    cfg = tiny_config(models, f"models.severity.inpainting={tmp_path / 'sev'}")
    with pytest.raises(ValueError, match="trained on autoencoder 0123456789abcdef"):
        execute(cfg, archive, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_scheduler_receives_records_not_images(setup, tmp_path):
    """Images and latents go stage to stage by reference: what the scheduler (the driver, on
    Ray) receives per sample is a few hundred bytes, less than one 16×16 image would be."""
    from pipeline.execution.scheduler import nbytes
    from pipeline.execution.stages import ShardCursor, read_stage
    from pipeline.execution.validation import SampleValidator, read_limits
    from pipeline.io.shards import list_shards

    root, models, archive = setup
    cfg = tiny_config(models)
    summary, payload = read_stage(ShardCursor(read_limits(cfg)), SampleValidator(cfg), (list_shards(archive)[0], 0, 4))
    one_image = min(nbytes(p) for p in payload.values())
    assert one_image > 3 * 16 * 16 * 4  # the payload carries the image (and its reference)
    assert nbytes(summary) / len(summary["records"]) < 400
    run = execute(cfg, archive, str(tmp_path / "out"))
    assert run["driver_bytes_received"] > 0 and run["driver_bytes_per_sample"] < min(1024, one_image)


def test_budgets_cap_steps_or_stop_resumably(setup, tmp_path):
    """--max-nfe caps every sample's steps and says so per row; --budget-hours stops starting
    solves once spent, and the same job rerun without it finishes with no duplicates."""
    root, models, archive = setup
    out = str(tmp_path / "capped")
    execute(tiny_config(models, "flash.max_nfe=5"), archive, out)
    rows = OutputStore(out).read_metrics().to_pylist()
    assert len(rows) == 9 and all(r["nfe"] <= 5 for r in rows)
    capped = [r for r in rows if r["budget_action"] != "none"]
    assert capped and all(r["budget_action"].startswith("nfe_capped_from_") and r["nfe"] == 5 for r in capped)
    assert all(int(r["budget_action"].rsplit("_", 1)[1]) > 5 for r in capped)
    out = str(tmp_path / "budget")
    cfg = tiny_config(models, "execution.batch_size=2", "execution.part_size=2")
    first = execute(replace_budget(cfg, 1e-9), archive, out)
    assert first["budget"]["reached"] and 0 < first["ok"] < 9
    rest = execute(cfg, archive, out)
    rows = OutputStore(out).read_metrics().to_pylist()
    assert rest["skipped_already_done"] == first["ok"] and len(rows) == len({r["key"] for r in rows}) == 9


def replace_budget(cfg, hours):
    from dataclasses import replace

    return replace(cfg, execution=replace(cfg.execution, budget_hours=hours))


def test_solver_threads_hold_for_the_solve_stage_only(setup, tmp_path, monkeypatch):
    import torch

    import workers.local_backend as local

    seen = []
    solve_stage = local.solve_stage

    def spy(*args):
        seen.append(torch.get_num_threads())
        return solve_stage(*args)

    monkeypatch.setattr(local, "solve_stage", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        root, models, archive = setup
        execute(tiny_config(models, "execution.solver_threads=2"), archive, str(tmp_path / "o"))
        assert seen and set(seen) == {2}
        assert torch.get_num_threads() == 3  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
