"""Blind parameters at read time: what each family's image says, in the documented order, or an error row."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.execution.config import load_config
from pipeline.execution.validation import SampleValidator, read_limits
from pipeline.io.samples import SampleError, parse_sample


def _png(arr: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _rgb(seed: int = 0, size: tuple = (16, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (*size, 3), dtype=np.uint8)   # no exact zeros


def _prepare(family: str, members: dict, *extra: str):
    cfg = load_config(None, [f"input.operator={{operator: {family}}}", *extra])
    sample = parse_sample({"__key__": "k", **members}, "shard", **{k: v for k, v in read_limits(cfg).items()})
    return SampleValidator(cfg).prepare(sample)


def test_inpainting_mask_comes_from_mask_png_then_alpha_then_zeros():
    rgb = _rgb()
    hole = np.zeros((16, 24), np.uint8)
    hole[4:8, 5:15] = 255
    alpha = np.full((16, 24), 255, np.uint8)
    alpha[:2] = 0
    rgba = _png(np.dstack([rgb, alpha]), "RGBA")
    zeros = rgb.copy()
    zeros[10:, :3] = 0

    by_mask = _prepare("inpainting", {"png": rgba, "mask.png": _png(hole, "L")})
    assert by_mask.estimated["mask"] == "mask.png" and by_mask.params["mask"] == "zeros"
    assert by_mask.estimated["missing_fraction"] == pytest.approx(40 / 384, abs=1e-6)
    observed = (by_mask.y > -1).any(0)     # the mask is written into the measurement as exact zeros (−1)
    assert torch.equal(~observed, torch.from_numpy(hole > 0))

    by_alpha = _prepare("inpainting", {"png": rgba})
    assert by_alpha.estimated["mask"] == "alpha" and by_alpha.estimated["missing_fraction"] == pytest.approx(2 / 16)

    by_zeros = _prepare("inpainting", {"png": _png(zeros)})
    assert by_zeros.estimated["mask"] == "zeros" and by_zeros.estimated["missing_fraction"] == pytest.approx(18 / 384, abs=1e-6)
    assert by_zeros.params["severity"] == pytest.approx((18 / 384) / 0.8, abs=1e-6)


def test_transparency_is_still_refused_where_no_blind_inpainting_reads_it():
    rgba = np.dstack([_rgb(), np.zeros((16, 24), np.uint8)])
    with pytest.raises(SampleError) as exc:
        _prepare("gaussian_blur", {"png": _png(rgba, "RGBA")})
    assert exc.value.kind == "mode"


def test_jpeg_quality_is_read_from_the_file_and_a_png_is_an_error_row():
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, "JPEG", quality=17)
    p = _prepare("jpeg", {"jpg": buf.getvalue()}, "flash.enabled=false")
    assert p.params["quality"] == 17 and p.estimated == {"quality": 17, "quality_exact": True, "subsampling": "4:2:0"}
    assert p.params["severity"] == pytest.approx((50 - 17) / 45, abs=1e-6)
    with pytest.raises(SampleError, match="k: blind jpeg reads the quality") as exc:
        _prepare("jpeg", {"png": _png(_rgb())}, "flash.enabled=false")
    assert exc.value.kind == "params"


def test_gaussian_width_is_left_pending_for_the_estimator_and_json_parameters_win():
    big = _png(_rgb(size=(64, 64)))
    blind = _prepare("gaussian_blur", {"png": big}, "input.noise=estimate")
    assert blind.pending == ("severity",) and set(blind.estimated) == {"noise_sigma"}
    given = _prepare("gaussian_blur", {"png": big, "json": b'{"operator": "gaussian_blur", "severity": 0.25}'})
    assert given.pending == () and given.params["severity"] == 0.25 and given.estimated is None


@pytest.mark.parametrize("family", ["motion_blur", "nonlinear_blur"])
def test_families_that_cannot_be_estimated_fail_the_config_and_give_error_rows(family):
    with pytest.raises(ValueError, match="cannot be estimated"):
        load_config(None, [f"input.operator={{operator: {family}}}"])
    cfg = load_config(None, ["flash.enabled=false"])
    sample = parse_sample({"__key__": "k", "png": _png(_rgb()), "json": f'{{"operator": "{family}"}}'.encode()}, "s")
    with pytest.raises(SampleError, match="k: .*cannot be estimated"):
        SampleValidator(cfg).prepare(sample)


def test_a_small_copy_is_lifted_to_the_scale_the_job_gives_and_its_reference_must_match():
    small = _png(_rgb(size=(10, 12)))
    clean = _png(_rgb(1, size=(40, 48)))
    p = _prepare("downsample", {"png": small, "clean.png": clean}, "input.operator.scale=4", "flash.enabled=false")
    assert p.y.shape == (3, 40, 48) and p.params["scale"] == 4.0 and p.params["severity"] == pytest.approx(1.0)
    with pytest.raises(SampleError, match="restored size") as exc:
        _prepare("downsample", {"png": small, "clean.png": clean}, "input.operator.scale=2", "flash.enabled=false")
    assert exc.value.kind == "size"
    with pytest.raises(SampleError) as exc:
        _prepare("downsample", {"png": small}, "input.operator.scale=16", "input.max_pixels=20000",
                 "flash.enabled=false")
    assert exc.value.kind == "pixel_bomb"
    with pytest.raises(ValueError, match="--scale"):
        load_config(None, ["input.operator={operator: downsample}"])
