"""One archive holding every bad input we know of, run through both backends.

Hostile members (escaping and absolute names, symlinks and hardlinks, absurd nesting, a 1×1
PNG, an image the models cannot take, an operator parameter that cannot act on its image)
and broken ones (empty, undecodable, wrong mode, 16-bit, pixel bomb, no parameters, NaN
parameters, a duplicate key, a truncated shard) sit beside good samples. Each backend must
give every bad sample one error row with a kind and a message naming its key, write nothing
outside the output, restore the good ones, and finish on a rerun; and the two backends must
agree row for row, images within 1/255.
"""
import collections
import io
import os
import tarfile

import numpy as np
import pytest
import torch

from pipeline.io.outputs import OutputStore
from pipeline.io.samples import encode_png
from pipeline.io.shards import write_shard
from tests.helpers import archive_samples, engine_setup, output_images, tiny_config
from tests.io.test_samples import png16_rgb, png_bytes, png_header_only
from workers.execute import execute

HOSTILE = {"tiny": "size", "huge": "size", "wide_kernel": "params", "../../escape": "unsafe_key",
           "/abs/evil": "unsafe_key", "lnk": "link", "hard": "link", "deep": "params"}
BROKEN = {  # key → (members, expected error kind)
    "bad-zero": ({"png": b""}, "empty"),
    "bad-garbage": ({"png": b"\x00not an image"}, "undecodable"),
    "bad-grey": ({"png": png_bytes("L", (16, 16))}, "mode"),
    "bad-rgba": ({"png": png_bytes("RGBA", (16, 16))}, "mode"),
    "bad-sixteen": ({"png": png16_rgb(16, 16)}, "mode"),
    "bad-size": ({"png": png_bytes(size=(8, 6))}, "size"),
    "bad-bomb": ({"png": png_header_only(20, 20)}, "pixel_bomb"),  # 400 px > input.max_pixels=300
    "bad-noparams": ({"png": png_bytes(size=(16, 16))}, "params"),
    "bad-nan": ({"png": png_bytes(size=(16, 16)), "json": b'{"operator": "gaussian_blur", "severity": NaN}'},
                "nan"),
}
WANT = {**HOSTILE, **{k: kind for k, (_, kind) in BROKEN.items()}}
GOOD = [f"ok{i:04d}" for i in range(4)] + ["dup0000"]


def build_archive(folder) -> str:
    folder.mkdir()
    good = archive_samples(4, prefix="ok")
    params = good[0]["json"]
    wide = {**params, "operator": "gaussian_blur", "kernel_size": 61}  # needs an image of ≥ 31 px
    write_shard(str(folder / "a.tar"), good[:2] + [
        {"__key__": "tiny", "png": torch.rand(3, 1, 1), "json": params},       # 1×1 PNG
        {"__key__": "huge", "png": torch.rand(3, 17, 17), "json": params},     # within max_pixels; models take 16²
        {"__key__": "wide_kernel", "png": torch.rand(3, 16, 16), "json": wide}] + archive_samples(1, prefix="dup"))
    png = encode_png(torch.rand(3, 16, 16))
    with tarfile.open(folder / "b.tar", "w") as tar:
        def add(name, data=None, kind=None, link=None):
            info = tarfile.TarInfo(name)
            if kind:
                info.type, info.linkname = kind, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("../../escape.png", png)
        add("/abs/evil.png", png)
        add("lnk.png", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("hard.png", kind=tarfile.LNKTYPE, link="deep.png")
        add("deep.png", png)
        add("deep.json", b"[" * 200_000 + b"]" * 200_000)
    write_shard(str(folder / "c.tar"), good[2:] + [{"__key__": k, **m} for k, (m, _) in BROKEN.items()]
                + archive_samples(1, prefix="dup"))  # dup0000 again: a duplicate of a.tar's
    trunc = folder / "d-trunc.tar"
    write_shard(str(trunc), archive_samples(3, prefix="t"))
    trunc.write_bytes(trunc.read_bytes()[: int(trunc.stat().st_size * 0.45)])  # inside the last sample
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """Both backends over the same archive, and a rerun of each."""
    root = tmp_path_factory.mktemp("hostile")
    _, models, _ = engine_setup(root)
    archive = build_archive(root / "hostile-archive")
    out = {}
    for engine in ("local", "ray"):
        if engine == "ray":
            request.getfixturevalue("ray_local")
        cfg = tiny_config(models, f"execution.engine={engine}", "models.dtype=float64", "input.expected_size=16",
                          "input.max_pixels=300")
        first = execute(cfg, archive, str(root / engine))
        again = execute(cfg, archive, str(root / engine))
        out[engine] = (str(root / engine), first, again)
    return root, out


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_every_bad_sample_is_one_error_row_and_a_rerun_completes(runs, engine):
    root, out = runs
    path, first, again = out[engine]
    rows = OutputStore(path).read_metrics().to_pylist()
    counts = collections.Counter(r["key"] for r in rows)
    assert counts.pop("dup0000") == 2 and set(counts.values()) == {1}  # the second occurrence is its own row
    errors = {r["key"]: r for r in rows if r["status"] == "error" and r["error_kind"] != "duplicate"}
    assert {k: errors[k]["error_kind"] for k in WANT} == WANT
    assert all(k in errors[k]["error"] for k in WANT)
    assert any(r["error_kind"] == "duplicate" and r["key"] == "dup0000" for r in rows)
    assert any(r["error_kind"] == "corrupt_tar" for r in rows)
    ok = {r["key"] for r in rows if r["status"] == "ok"}
    assert set(GOOD) <= ok <= set(GOOD) | {"t0000", "t0001"}  # the truncated shard's complete samples restore
    names = list(output_images(path))
    assert not any(n.startswith(("/", "..")) or "/../" in n for n in names)
    assert not os.path.exists(root / "escape.png") and not os.path.exists(root.parent / "escape.png")
    assert again["samples"] == 0 and again["skipped_already_done"] == len(rows)
    assert len(OutputStore(path).read_metrics()) == len(rows)


def test_both_backends_agree_row_for_row_and_pixel_for_pixel(runs):
    _, out = runs
    (local, lsum, _), (ray, rsum, _) = out["local"], out["ray"]
    key = lambda r: (r["key"], r["status"], r["error_kind"], r["nfe"], r["start_step"])  # noqa: E731
    a = sorted(map(key, OutputStore(local).read_metrics().to_pylist()), key=str)
    b = sorted(map(key, OutputStore(ray).read_metrics().to_pylist()), key=str)
    assert a == b
    got, want = output_images(ray), output_images(local)
    assert got.keys() == want.keys() and len(got) == lsum["ok"] == rsum["ok"] > 0
    assert max(np.abs(got[k] - want[k]).max() for k in got) <= 1.0  # within 1/255
    assert lsum["errors_by_kind"] == rsum["errors_by_kind"] and lsum["committed"] == rsum["committed"]
