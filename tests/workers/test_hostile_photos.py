"""Real-world and hostile files at any size, on both engines: each is an ok row at its own size
(upright) or one error row naming its key, and the job goes on.

Camera files: an EXIF-rotated JPEG (restored upright, beside its upright reference), CMYK and
progressive JPEGs, palette and opaque-alpha PNGs (input.allow_convert), a strip as long in
tiles as a 10,000×16 photo is for the shipped prior.
Refused: 1×N, N×1 and 3×3 (a side under 8 px), 16-bit and transparent PNGs (never truncated
or flattened), animated GIF and WebP, and a JPEG whose header claims more rows than it holds.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io.outputs import OutputStore
from pipeline.io.samples import encode_png
from pipeline.io.shards import write_shard
from tests.helpers import FAMILY_PARAMS, engine_setup, output_images, tiny_config
from tests.io.test_samples import png16_rgb
from workers.execute import execute

PARAMS = {**FAMILY_PARAMS["inpainting"], "operator": "inpainting", "severity": 0.3, "noise_sigma": 0.05, "seed": 3}


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 80 * np.sin(xx / 7.0 + seed)[..., None] * np.cos(yy / 5.0)[..., None]
    return np.clip(base + np.random.default_rng(seed).normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _lying_jpeg() -> bytes:
    """A JPEG whose SOF header claims twice the rows its data holds."""
    data = bytearray(_save(Image.fromarray(_photo(24, 40, 9)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = (48).to_bytes(2, "big")
    return bytes(data[:len(data) * 3 // 4])


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(_photo(20, 30, s)) for s in (1, 2)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _members():
    upright = _photo(40, 24, 1)                                  # 40 rows × 24 columns, as seen
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)   # the sensor's 24×40
    exif = Image.Exif()
    exif[0x0112] = 6                                             # "rotate 90° clockwise to view"
    rgba = np.dstack([_photo(20, 30, 4), np.full((20, 30), 255, np.uint8)])
    alpha = rgba.copy()
    alpha[0, 0, 3] = 0
    ok = {
        "exif": ({"jpg": _save(stored, "JPEG", exif=exif, quality=98),
                  "clean.png": encode_png(torch.from_numpy(upright).permute(2, 0, 1).float() / 255)}, (40, 24)),
        "cmyk": ({"jpg": _save(Image.fromarray(_photo(30, 20, 2)).convert("CMYK"), "JPEG")}, (30, 20)),
        "progressive": ({"jpg": _save(Image.fromarray(_photo(26, 34, 3)), "JPEG", progressive=True)}, (26, 34)),
        "palette": ({"png": _save(Image.fromarray(_photo(18, 22, 5)).convert("P"), "PNG")}, (18, 22)),
        "opaque-alpha": ({"png": _save(Image.fromarray(rgba, "RGBA"), "PNG")}, (20, 30)),
        # 10,000×16 at the shipped prior's scale: 156 tiles long (the test models' tile is 16 px, not 64)
        "strip": ({"png": encode_png(torch.rand(3, 2_496, 16))}, (2_496, 16)),
    }
    bad = {
        "row-1xN": ({"png": _save(Image.fromarray(_photo(1, 50, 6)), "PNG")}, "size"),
        "col-Nx1": ({"png": _save(Image.fromarray(_photo(50, 1, 6)), "PNG")}, "size"),
        "three": ({"png": _save(Image.fromarray(_photo(3, 3, 6)), "PNG")}, "size"),
        "sixteen": ({"png": png16_rgb(20, 20)}, "mode"),
        "transparent": ({"png": _save(Image.fromarray(alpha, "RGBA"), "PNG")}, "mode"),
        "gif": ({"gif": _animated("GIF")}, "missing_image"),   # not an image member a sample is read from
        "webp": ({"webp": _animated("WEBP")}, "undecodable"),
        "liar": ({"jpg": _lying_jpeg()}, "undecodable"),
    }
    return ok, bad


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("photos")
    _, models, _ = engine_setup(root)
    ok, bad = _members()
    (root / "in").mkdir()
    write_shard(str(root / "in" / "a.tar"), [{"__key__": k, **m, "json": PARAMS} for k, (m, _) in
                                              {**ok, **bad}.items()])
    out = {}
    for engine in ("local", "ray"):
        if engine == "ray":
            request.getfixturevalue("ray_local")
        cfg = tiny_config(models, f"execution.engine={engine}", "models.dtype=float64", "input.allow_convert=true")
        execute(cfg, str(root / "in"), str(root / engine))
        out[engine] = str(root / engine)
    return out, ok, bad


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_each_file_is_one_row_at_its_own_size_or_one_error_naming_it(runs, engine):
    out, ok, bad = runs
    rows = OutputStore(out[engine]).read_metrics().to_pylist()
    assert sorted(r["key"] for r in rows) == sorted([*ok, *bad])
    by_key = {r["key"]: r for r in rows}
    images = output_images(out[engine])
    for key, (_, (h, w)) in ok.items():
        r = by_key[key]
        assert r["status"] == "ok", (key, r["error"])
        assert (r["height"], r["width"]) == (h, w) and images[key].shape == (h, w, 3)
    assert by_key["exif"]["psnr"] is not None   # upright output beside its upright reference
    for key, (_, kind) in bad.items():
        r = by_key[key]
        assert r["status"] == "error" and r["error_kind"] == kind and key in r["error"], (key, r)


def test_both_engines_agree_pixel_for_pixel(runs):
    out, ok, _ = runs
    a, b = output_images(out["local"]), output_images(out["ray"])
    assert all((a[k] == b[k]).all() for k in ok)
