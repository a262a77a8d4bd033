"""A job that names only the family: parameters estimated per sample, json parameters kept, rows say so."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.io.outputs import OutputStore
from pipeline.io.shards import write_shard
from tests.helpers import archive_samples, build_tiny_models, tiny_config
from workers.execute import execute


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("blind") / "models")


def _rows(out: str) -> dict:
    return {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}


def test_blind_gaussian_blur_estimates_width_and_noise_and_keeps_given_parameters(models, tmp_path):
    samples = archive_samples(6, families=("gaussian_blur",))
    for s in samples[:4]:
        del s["json"]                       # as a real archive: no parameters
    write_shard(str(tmp_path / "a.tar"), samples)
    cfg = tiny_config(models, "input.operator={operator: gaussian_blur, kernel_size: 7}", "input.noise=estimate")
    out = str(tmp_path / "out")
    summary = execute(cfg, str(tmp_path / "a.tar"), out)
    assert summary["ok"] == 6 and summary["errors"] == 0
    rows = _rows(out)
    for s in samples[:4]:
        est = json.loads(rows[s["__key__"]]["estimated"])
        assert set(est) == {"severity", "severity_std", "blur_std_px", "noise_sigma"}
        assert rows[s["__key__"]]["severity"] == est["severity"] and 0 <= est["severity"] <= 1 and est["severity_std"] > 0
        assert est["blur_std_px"] == pytest.approx(0.3 + 2.7 * est["severity"], abs=1e-3)
    for s in samples[4:]:                   # mixed archive: a json's parameters stand
        assert rows[s["__key__"]]["estimated"] is None
        assert rows[s["__key__"]]["severity"] == s["json"]["severity"]


def test_blind_inpainting_reads_alpha_and_jpeg_reads_quality_and_motion_blur_is_an_error_row(models, tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, (16, 16, 3), dtype=np.uint8)
    alpha = np.full((16, 16), 255, np.uint8)
    alpha[:4] = 0
    png, jpg = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(png, "PNG")
    Image.fromarray(rng.integers(1, 256, (20, 28, 3), dtype=np.uint8)).save(jpg, "JPEG", quality=20)  # a photo
    write_shard(str(tmp_path / "i.tar"), [{"__key__": "holes", "png": png.getvalue()}])
    write_shard(str(tmp_path / "j.tar"), [{"__key__": "web", "jpg": jpg.getvalue()}])
    out_i, out_j = str(tmp_path / "oi"), str(tmp_path / "oj")
    assert execute(tiny_config(models, "input.operator={operator: inpainting}", "input.noise=0.01"),
                   str(tmp_path / "i.tar"), out_i)["ok"] == 1
    assert json.loads(_rows(out_i)["holes"]["estimated"]) == {"mask": "alpha", "missing_fraction": 0.25}
    assert execute(tiny_config(models, "input.operator={operator: jpeg}"), str(tmp_path / "j.tar"), out_j)["ok"] == 1
    row = _rows(out_j)["web"]
    assert json.loads(row["estimated"]) == {"quality": 20, "quality_exact": True, "subsampling": "4:2:0"}
    assert row["severity"] == pytest.approx(30 / 45, abs=1e-6) and (row["height"], row["width"]) == (20, 28)

    plain = io.BytesIO()
    Image.fromarray(rgb).save(plain, "PNG")
    write_shard(str(tmp_path / "m.tar"), [{"__key__": "shake", "png": plain.getvalue(),
                                           "json": {"operator": "motion_blur"}}])
    out_m = str(tmp_path / "om")
    execute(tiny_config(models, "execution.max_error_rate=1.0"), str(tmp_path / "m.tar"), out_m)
    row = _rows(out_m)["shake"]
    assert row["status"] == "error" and row["error_kind"] == "params" and "cannot be estimated" in row["error"]


def test_thumbnails_restore_at_the_scale_the_job_gives(models, tmp_path):
    """`--scale 2`: a 10×14 copy restores to a 20×28 photo (the whole-photo path) and is measured at that size."""
    rng = np.random.default_rng(1)
    clean = rng.integers(1, 256, (20, 28, 3), dtype=np.uint8)
    small, ref = io.BytesIO(), io.BytesIO()
    Image.fromarray(clean).resize((14, 10), Image.Resampling.BICUBIC).save(small, "PNG")
    Image.fromarray(clean).save(ref, "PNG")
    write_shard(str(tmp_path / "t.tar"), [{"__key__": "thumb", "png": small.getvalue(), "clean.png": ref.getvalue()}])
    out = str(tmp_path / "ot")
    assert execute(tiny_config(models, "input.operator={operator: downsample, scale: 2}"), str(tmp_path / "t.tar"),
                   out)["ok"] == 1
    row = _rows(out)["thumb"]
    assert (row["height"], row["width"]) == (20, 28) and row["severity"] == pytest.approx(0.5)
    assert row["psnr"] is not None and row["psnr_input"] is not None   # against the 20×28 reference


def test_blind_varying_blur_fits_four_corners(models, tmp_path):
    """A varying blur without json: the Gaussian estimator's windows give its corners; severity is their mean."""
    samples = archive_samples(2, families=("varying_blur",))
    for s in samples:
        del s["json"]
    write_shard(str(tmp_path / "v.tar"), samples)
    cfg = tiny_config(models, "input.operator={operator: varying_blur, kernel_size: 7}", "input.noise=estimate")
    out = str(tmp_path / "ov")
    assert execute(cfg, str(tmp_path / "v.tar"), out)["ok"] == 2
    for row in _rows(out).values():
        est = json.loads(row["estimated"])
        assert set(est) == {"severity", "severity_corners", "severity_corners_std", "noise_sigma"}
        assert len(est["severity_corners"]) == 4 and all(0 <= c <= 1 for c in est["severity_corners"])
        assert row["severity"] == pytest.approx(sum(est["severity_corners"]) / 4, abs=1e-6)
