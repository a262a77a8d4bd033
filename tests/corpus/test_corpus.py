"""The corpus tools: photos -> clean crops -> degraded shards -> compact export.

Small synthetic photos keep this fast; what matters is determinism (same command, same
bytes), per-key independence of degradations, keys naming their photo, and the split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.corpus.degradation import parse_severity
from pipeline.corpus.shard_jobs import degrade, export_corpus, make_shards
from pipeline.corpus.crops import load_corpus_export, parse_crop_key
from pipeline.corpus.photos import (REPO_ROOT, PhotoNotFound, photo_list_path, photo_slug, read_photo_list,
                                    resolve_photo)
from pipeline.sampling.seeding import sample_seed
from pipeline.io.shards import iter_samples, list_shards


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 5.0 + seed)[..., None] * np.cos(yy / 7.0)[..., None]
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, arr in (("leaves", _textured(160, 224, 1)), ("bark", _textured(200, 150, 2)),
                      ("flat", np.full((160, 224, 3), 117, np.uint8))):
        p = root / f"{name}.png"
        Image.fromarray(arr).save(p)
        paths[name] = str(p)
    lst = root / "list.txt"
    lst.write_text("# test photos\n\n" + "\n".join(paths.values()) + "\n")
    paths["list"] = str(lst)
    return paths


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _by_key(folder: Path) -> dict:
    return {s.key: s for shard in list_shards(str(folder)) for s in iter_samples(shard)}


SMALL = dict(short_sides="64,128", size=32)


@pytest.fixture(scope="module")
def clean(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    make_shards(photos=photos["list"], output=str(out), shard_size=7, **SMALL)
    return out


def test_make_shards_is_byte_deterministic(photos, clean, tmp_path):
    make_shards(photos=photos["list"], output=str(tmp_path), shard_size=7, **SMALL)
    first, second = _files(clean), _files(tmp_path)
    assert first == second
    assert len([n for n in first if n.endswith(".tar")]) > 1


def test_keys_carry_the_photo_and_flat_crops_are_dropped(photos, clean):
    index = json.loads((clean / "index.json").read_text())
    samples = _by_key(clean)
    assert index["count"] == len(samples) > 0
    assert index["crops_per_photo"][photos["flat"]] == 0
    assert index["crops_per_photo"][photos["leaves"]] > 0 and index["crops_per_photo"][photos["bark"]] > 0
    for key, s in samples.items():
        slug, short, row, col = parse_crop_key(key)
        assert index["slugs"][slug] == s.params["photo"]
        assert (short, row, col) == (s.params["short_side"], s.params["row"], s.params["col"])
        assert short in (64, 128) and tuple(s.image01.shape) == (3, 32, 32)
    assert not any(photo_slug(photos["flat"]) in k for k in samples)
    # a flat photo passes when the filter is off: the filter, not the grid, dropped it
    from pipeline.corpus.crops import photo_crops
    kept, _ = photo_crops(photos["flat"], size=32, short_sides=[64], min_std=0.0, min_texture=0.0)
    assert len(kept) == 4  # 64×90 -> a 2×2 grid of 32-pixel crops


def test_degrade_is_per_key_deterministic_and_carries_params(photos, clean, tmp_path):
    # same crops, different shard partners and batch sizes: per-key outputs must agree
    regrouped = tmp_path / "regrouped"
    make_shards(photos=photos["list"], output=str(regrouped), shard_size=1000, **SMALL)
    a, b = tmp_path / "a", tmp_path / "b"
    degrade(input=str(clean), output=str(a), operator="inpainting", severity="range:0.2,0.8", noise=0.05, seed=3,
            batch_size=4)
    degrade(input=str(regrouped), output=str(b), operator="inpainting", severity="range:0.2,0.8", noise=0.05,
            seed=3, batch_size=64)
    raw_a, raw_b = _raw_members(a), _raw_members(b)
    assert raw_a.keys() == raw_b.keys() and len(raw_a) == 3 * json.loads((clean / "index.json").read_text())["count"]
    for key in raw_a:
        assert raw_a[key] == raw_b[key], key
    clean_samples, deg = _by_key(clean), _by_key(a)
    from pipeline.operators import build_operator
    for key, s in deg.items():
        p = dict(s.params)
        prov = p.pop("provenance")
        assert p["operator"] == "inpainting" and p["noise_sigma"] == 0.05 and 0.2 <= p["severity"] <= 0.8
        assert p["seed"] == sample_seed(3, key, "degradation")
        assert prov["photo"] == clean_samples[key].params["photo"]
        assert s.clean01.equal(clean_samples[key].image01)  # lossless reference
        assert not s.image01.equal(s.clean01)
        build_operator([p], [key])  # the stored dict rebuilds the operator
    # another seed gives other severities; a fixed severity is exact
    c = tmp_path / "c"
    degrade(input=str(clean), output=str(c), operator="inpainting", severity="fixed:0.5", noise=0.0, seed=3)
    assert {s.params["severity"] for s in _by_key(c).values()} == {0.5}


def _raw_members(folder: Path) -> dict[str, bytes]:
    import tarfile

    out = {}
    for shard in list_shards(str(folder)):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                out[m.name] = tar.extractfile(m).read()
    return out


def test_degrade_mix_and_blur_families(clean, tmp_path):
    out = tmp_path / "mix"
    index = degrade(input=str(clean), output=str(out), operator="gaussian_blur=1,inpainting=1", noise=0.05, seed=0)
    assert set(index["per_operator"]) <= {"gaussian_blur", "inpainting"}
    assert sum(index["per_operator"].values()) == index["count"]
    for s in _by_key(out).values():
        assert s.params["operator"] in ("gaussian_blur", "inpainting")


def test_degrade_writes_what_an_archive_holds_a_jpeg_file_and_a_small_copy(clean, tmp_path):
    from pipeline.io.jpeg_tables import jpeg_quality
    import tarfile

    degrade(input=str(clean), output=str(tmp_path / "j"), operator="jpeg", noise=0.0, seed=0)
    degrade(input=str(clean), output=str(tmp_path / "d"), operator="downsample", noise=0.05, seed=0)
    for shard in sorted((tmp_path / "j").glob("*.tar")):
        with tarfile.open(shard) as tar:
            jpgs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")}
            assert jpgs and not any(n.endswith(".png") and ".clean." not in n for n in tar.getnames())
        for name, data in jpgs.items():
            assert jpeg_quality(data)["exact"]
    for s in _by_key(tmp_path / "j").values():
        assert s.jpeg["quality"] == s.params["quality"]
    for s in _by_key(tmp_path / "d").values():
        h, w = s.params["size"]
        assert tuple(s.clean01.shape[-2:]) == (h, w)
        assert tuple(s.image01.shape[-2:]) == (max(1, round(h / s.params["scale"])), max(1, round(w / s.params["scale"])))


def test_severity_specs():
    assert parse_severity("uniform") == (0.0, 1.0)
    assert parse_severity("fixed:0.3") == (0.3, 0.3)
    assert parse_severity("range:0.1,0.4") == (0.1, 0.4)
    for bad in ("fixed:2", "range:0.5,0.1", "gauss"):
        with pytest.raises(Exception):
            parse_severity(bad)


def test_export_round_trip(clean, tmp_path):
    meta = export_corpus(input=str(clean), output=str(tmp_path / "export"), quality=95)
    arr, keys, photos = load_corpus_export(str(tmp_path / "export"))
    samples = _by_key(clean)
    assert meta["count"] == len(keys) == arr.shape[0] == len(samples)
    assert arr.dtype == np.uint8 and arr.shape[1:] == (32, 32, 3)
    assert sorted(keys) == sorted(samples) and len(set(keys)) == len(keys)
    for i, k in enumerate(keys):
        ref = (samples[k].image01.permute(1, 2, 0).numpy() * 255).round()
        assert photos[i] == samples[k].params["photo"]
        assert np.abs(arr[i].astype(float) - ref).mean() < 4.0  # JPEG-95
    export_corpus(input=str(clean), output=str(tmp_path / "again"), quality=95)
    assert _files(tmp_path / "export") == _files(tmp_path / "again")


def test_photo_lists_split_by_photo():
    """The lists ship in the clone (data/photos), so the shorthands always resolve."""
    assert Path(photo_list_path("train")).resolve().is_relative_to(REPO_ROOT)
    train, dev = read_photo_list("train"), read_photo_list("dev")
    assert len(train) == 58 and len(dev) == 8 and not set(train) & set(dev)
    paths = lambda es: {resolve_photo(e, check=False) for e in es}  # noqa: E731
    assert not paths(train) & paths(dev)


def test_missing_photo_names_the_entry(tmp_path):
    with pytest.raises(PhotoNotFound, match="no-such-pkg:usr/share/nothing.jpg"):
        resolve_photo("no-such-pkg:usr/share/nothing.jpg")
    lst = tmp_path / "l.txt"
    lst.write_text(str(tmp_path / "gone.png") + "\n")
    with pytest.raises(PhotoNotFound, match="gone.png"):
        read_photo_list(str(lst), check=True)
    with pytest.raises(FileNotFoundError, match="nolist"):
        read_photo_list(str(tmp_path / "nolist.txt"))


def test_make_shards_whole_keeps_each_photo_at_its_size_and_degrade_mixes_sizes(photos, tmp_path):
    """--whole: one sample per photo at its own size (upright), --max-side scales the long side
    down; degrading a shard of mixed sizes gives each measurement its own photo's size."""
    index = make_shards(photos["list"], str(tmp_path / "whole"), whole=True)
    assert index["kind"] == "clean-photos" and index["count"] == 3   # no texture filter on whole photos
    got = {s.key: s for s in iter_samples(list_shards(str(tmp_path / "whole"))[0])}
    assert {k: tuple(s.image01.shape[-2:]) for k, s in got.items()} == {
        f"{photo_slug(p)}_whole": size for p, size in ((photos["leaves"], (160, 224)), (photos["bark"], (200, 150)),
                                                      (photos["flat"], (160, 224)))}
    scaled = make_shards(photos["list"], str(tmp_path / "scaled"), whole=True, max_side=100)
    sizes = sorted(tuple(s.image01.shape[-2:]) for s in iter_samples(list_shards(str(tmp_path / "scaled"))[0]))
    assert scaled["max_side"] == 100 and sizes == [(71, 100), (71, 100), (100, 75)]
    degrade(str(tmp_path / "whole"), str(tmp_path / "deg"), "gaussian_blur=1,varying_blur=1,inpainting=1",
            batch_size=8)
    for s in iter_samples(list_shards(str(tmp_path / "deg"))[0]):
        assert s.image01.shape == s.clean01.shape == got[s.key].image01.shape
    with pytest.raises(ValueError, match="max-side"):
        make_shards(photos["list"], str(tmp_path / "bad"), max_side=100)
