"""The CLI: restore end to end (local engine), fail-fast config errors, the error-rate budget."""
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.io.outputs import OutputStore
from pipeline.io.shards import write_shard
from tests.helpers import archive_samples, build_tiny_models

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("cli-models"))


def _sets(models):
    return [a for o in models["overrides"] for a in ("--set", o)]


def test_restore_local_engine(models, tmp_path):
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(4))
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out), "--engine", "local",
                              "--batch-size", "2", "--solver", "gml_dps", *_sets(models)])
    assert res.exit_code == 0, res.output
    rows = OutputStore(str(out)).read_metrics().to_pylist()
    assert len(rows) == 4 and {r["solver"] for r in rows} == {"gml_dps"}


def test_config_error_fails_before_compute(models, tmp_path):
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(2))
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                              "--engine", "local", "--solver", "dps9000", *_sets(models)])
    assert res.exit_code == 1 and "dps9000" in res.output
    assert not (tmp_path / "out").exists()
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out"),
                              "--engine", "local", *_sets(models)])
    assert res.exit_code == 1 and not (tmp_path / "out").exists()
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                              "--engine", "local", "--set", "execution.max_wait_s=2", *_sets(models)])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 1 and "error: execution.max_wait_s" in text and "local engine" in text, res.output
    assert not (tmp_path / "out").exists() and "Traceback" not in res.output


def test_error_budget_exceeded_exits_nonzero_after_writing(models, tmp_path):
    good = archive_samples(2)
    bad = [{"__key__": f"bad{i}", "png": b"not an image"} for i in range(3)]
    write_shard(str(tmp_path / "in" / "a.tar"), good + bad)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out), "--engine", "local",
                              "--max-error-rate", "0.2", *_sets(models)])
    assert res.exit_code == 2, res.output
    rows = {r["key"]: r for r in OutputStore(str(out)).read_metrics().to_pylist()}
    assert len(rows) == 5
    assert rows["bad0"]["status"] == "error" and "bad0" in rows["bad0"]["error"]
    assert rows["s0000"]["status"] == "ok"


def test_calibrate_then_estimate_prices_the_archive_without_restoring(models, tmp_path):
    import json

    # calibration times each family's samples, two at least: three families, two samples each
    families = ("gaussian_blur", "inpainting", "motion_blur")
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(6, families=families) + [{"__key__": "bad", "png": b""}])
    res = runner.invoke(app, ["bench", "calibrate", "--solvers", "ldps", "--batch-sizes", "1,2", "--steps", "3",
                              "--repeats", "1", "--input", str(tmp_path / "in"), *_sets(models)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "estimate.json"
    res = runner.invoke(app, ["estimate", "--input", str(tmp_path / "in"), "--output", str(out),
                              "--price-per-hour", "3.0", *_sets(models)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["valid"] == 6 and report["invalid"] == {"empty": 1} and report["samples_seen"] == 7
    ldps = report["solvers"]["ldps"]
    assert sum(ldps["start_step_histogram"].values()) == 6 and ldps["baseline_nfe"] == 50
    assert ldps["predicted_solve_seconds"] > 0 and ldps["predicted_cost"] == pytest.approx(
        ldps["predicted_solve_seconds"] / 3600 * 3.0, rel=1e-3, abs=1e-4)
    assert report["solvers"]["psld"]["predicted_solve_seconds"].startswith("missing: no calibration")
    assert not (tmp_path / "restored").exists()  # nothing was restored
    half = runner.invoke(app, ["estimate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "h.json"),
                               "--sample-fraction", "0.5", *_sets(models)])
    assert half.exit_code == 0
    assert json.loads((tmp_path / "h.json").read_text())["samples_seen"] < 7
    bad = runner.invoke(app, ["estimate", "--input", str(tmp_path / "in"), "--sample-fraction", "2", *_sets(models)])
    assert bad.exit_code == 1 and "sample-fraction" in bad.output
    # the calibration follows the architecture: retrained weights keep it, other networks get none
    import torch
    from diffusers import UNet2DModel

    from pipeline.models.model_store import load_model, save_model

    denoiser = next(o.split("=", 1)[1] for o in models["overrides"] if o.startswith("models.denoiser="))
    unet, meta = load_model(denoiser, return_meta=True)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    wider = UNet2DModel.from_config({**unet.config, "layers_per_block": 2})
    root = denoiser.rsplit("/", 1)[0]
    priced = {}
    for name, model in (("ldm-retrained", unet), ("ldm-wider", wider)):
        save_model(model, f"{root}/{name}", extra=meta)   # beside the calibrated ldm: the same calibration.json
        res = runner.invoke(app, ["estimate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "r.json"),
                                  *_sets(models), "--set", f"models.denoiser={root}/{name}"])
        assert res.exit_code == 0, res.output
        priced[name] = json.loads((tmp_path / "r.json").read_text())["solvers"]["ldps"]["predicted_solve_seconds"]
    assert priced["ldm-retrained"] > 0
    assert priced["ldm-wider"].startswith("missing: no calibration for cpu / ldps / architecture")


def test_unwritable_output_is_one_error_line_before_compute(models, tmp_path):
    import os

    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(2))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    targets = [blocker / "out"]  # below a file: not writable, even for root
    if os.getuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        targets.append(tmp_path / "ro" / "out")
    for out in targets:
        res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out),
                                  "--engine", "local", *_sets(models)])
        text = " ".join(res.output.split())  # rich wraps long lines
        assert res.exit_code == 1 and "error:" in text and "is not writable" in text, res.output
        assert "Traceback" not in res.output


def test_inspect_reports_and_draws_the_best_median_and_worst(models, tmp_path):
    from PIL import Image

    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(5))
    out = tmp_path / "out"
    assert runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out), "--engine", "local",
                               *_sets(models)]).exit_code == 0
    res = runner.invoke(app, ["inspect", str(out)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "status ok" in text and "Spearman(residual_z, PSNR)" in text, res.output
    sheet = Image.open(out / "preview.png")
    sheet.load()  # a whole, decodable PNG
    assert sheet.size[0] > 2 * sheet.size[1] / 3  # three rows (best, median, worst), each 3 panels wide
    assert len(sheet.convert("RGB").getcolors(maxcolors=1 << 20)) > 50  # images and text, not a blank canvas
    assert Image.open(out / "plots.png").size[0] > 100
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "error:" in missing.output


def test_preview_has_a_row_per_sample_and_draws_one_without_a_reference(models, tmp_path):
    from pipeline.inspection.output_report import pick_examples, preview

    no_ref = archive_samples(2, prefix="n")
    for s in no_ref:
        del s["clean.png"]
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(3) + no_ref)
    out = tmp_path / "out"
    assert runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out), "--engine", "local",
                               *_sets(models)]).exit_code == 0
    store = OutputStore(str(out))
    rows = {r["key"]: r for r in store.read_metrics().to_pylist()}
    assert rows["n0000"]["status"] == "ok" and rows["n0000"]["psnr"] is None
    three = preview(store, pick_examples(list(rows.values())))
    one = preview(store, {"only": rows["s0000"]})
    assert one.size[1] < three.size[1] and one.size[0] > one.size[1]  # grows with rows; 3 columns, 1 row
    bare = preview(store, {"no reference": rows["n0000"]})
    assert bare.size[0] > bare.size[1] and len(bare.getcolors(maxcolors=1 << 20)) > 50
    mixed = preview(store, {"ref": rows["s0001"], "no reference": rows["n0001"]})
    assert mixed.size[0] == one.size[0] and mixed.size[1] > one.size[1]  # same columns with a blank reference


def test_restore_lists_the_input_once(models, tmp_path, monkeypatch):
    """The fail-fast check lists the shards and the job runs on that list (a bucket listing is slow)."""
    import workers.execute
    import workers.job_config
    from pipeline.io.shards import list_shards

    calls = []
    counted = lambda url: calls.append(url) or list_shards(url)  # noqa: E731
    monkeypatch.setattr(workers.job_config, "list_shards", counted)
    monkeypatch.setattr(workers.execute, "list_shards", counted)
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(2))
    res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                              "--engine", "local", *_sets(models)])
    assert res.exit_code == 0, res.output
    assert calls == [str(tmp_path / "in")]


def test_blind_operator_flags_fail_fast_where_nothing_can_be_estimated(tmp_path):
    args = ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--engine", "local"]
    shake = runner.invoke(app, args + ["--operator", "motion_blur"])
    assert shake.exit_code == 1 and "cannot be estimated" in " ".join(shake.output.split())
    scaled_jpeg = runner.invoke(app, args + ["--operator", "jpeg", "--scale", "2"])
    assert scaled_jpeg.exit_code != 0 and "--scale" in scaled_jpeg.output
    assert not (tmp_path / "out").exists()
