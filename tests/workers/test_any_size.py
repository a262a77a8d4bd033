"""A restore job on photos of mixed sizes: each comes back at its own size, native ones unchanged.

Tiny models are 16 px (a 4×4 latent), so 24×20 and 40×16 take the whole-photo path (a
canvas of several tiles, or padded up to one), 16×16 today's path; a 7-px side is refused
at read time.
"""
import pytest
import torch
import torch.nn.functional as F

from pipeline.io.outputs import OutputStore
from pipeline.io.shards import write_shard
from pipeline.operators import OPERATORS, measure
from pipeline.sampling.seeding import generators
from tests.helpers import FAMILY_PARAMS, archive_samples, build_tiny_models, output_images, tiny_config
from workers.execute import execute

SIZES = {"w0000": (24, 20), "w0001": (40, 16), "w0002": (24, 20), "w0003": (20, 36)}


def sized_sample(key: str, size: tuple[int, int], family: str, i: int) -> dict:
    """A smooth clean photo of `size`, degraded by `family` at its own size."""
    g = torch.Generator().manual_seed(100 + i)
    clean = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)
    params = OPERATORS[family].params_for(0.4, 0.05, 2000 + i, **FAMILY_PARAMS[family])
    y = measure(OPERATORS[family]([params], [key]), clean, generators(0, [key], "degradation"))[0].clamp(0, 1)
    return {"__key__": key, "png": y, "clean.png": clean[0], "json": params}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("anysize")
    models = build_tiny_models(root / "models")
    families = ("gaussian_blur", "inpainting")
    native = archive_samples(4, families=families)
    others = [sized_sample(k, s, families[i % 2], i) for i, (k, s) in enumerate(SIZES.items())]
    small = {**others[0], "__key__": "small", "png": torch.rand(3, 7, 30)}
    small.pop("clean.png")
    (root / "mixed").mkdir()
    (root / "native").mkdir()
    write_shard(str(root / "mixed" / "a.tar"), native[:2] + others[:2] + [small])
    write_shard(str(root / "mixed" / "b.tar"), others[2:] + native[2:])
    write_shard(str(root / "native" / "a.tar"), native)
    return root, models


def test_mixed_sizes_restore_at_their_own_size(setup, tmp_path):
    root, models = setup
    out = str(tmp_path / "mixed")
    summary = execute(tiny_config(models, "models.dtype=float64"), str(root / "mixed"), out)
    rows = {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}
    assert summary["ok"] == 8 and summary["errors"] == 1
    assert rows["small"]["status"] == "error" and rows["small"]["error_kind"] == "size"
    assert "small" in rows["small"]["error"]
    images = output_images(out)
    for key, (h, w) in {**SIZES, **{f"s{i:04d}": (16, 16) for i in range(4)}}.items():
        r = rows[key]
        assert r["status"] == "ok", r["error"]
        assert (r["height"], r["width"]) == (h, w) and images[key].shape == (h, w, 3)
        assert r["psnr"] is not None  # the reference matched the output's size
        if (h, w) == (16, 16):
            assert r["tiles"] == 1 and r["tile_steps"] == r["nfe"]
        else:
            assert r["tiles"] >= 1 and r["nfe"] <= r["tile_steps"] <= r["tiles"] * r["nfe"]
            assert r["nfe"] == r["start_step"] + 1 == r["denoiser_calls"]
    assert rows["w0001"]["tiles"] > 1  # a 40-px side: a 10-latent-px canvas side, more than one 4-px tile


def test_native_rows_equal_a_native_only_run(setup, tmp_path):
    root, models = setup
    cfg = tiny_config(models, "models.dtype=float64")
    execute(cfg, str(root / "mixed"), str(tmp_path / "mixed"))
    execute(cfg, str(root / "native"), str(tmp_path / "native"))
    mixed = {r["key"]: r for r in OutputStore(str(tmp_path / "mixed")).read_metrics().to_pylist()}
    native = OutputStore(str(tmp_path / "native")).read_metrics().to_pylist()
    skip = {"seconds_severity", "seconds_solve", "image_url", "part", "shard"}
    for r in native:
        assert {k: v for k, v in r.items() if k not in skip} == {k: v for k, v in mixed[r["key"]].items()
                                                                 if k not in skip}
    a, b = output_images(str(tmp_path / "mixed")), output_images(str(tmp_path / "native"))
    assert all((a[r["key"]] == b[r["key"]]).all() for r in native)


def test_baseline_and_capped_runs_take_any_size(setup, tmp_path):
    root, models = setup
    execute(tiny_config(models, "flash.enabled=false", "solver.name=unconditional"), str(root / "mixed"),
            str(tmp_path / "base"))
    rows = [r for r in OutputStore(str(tmp_path / "base")).read_metrics().to_pylist() if r["status"] == "ok"]
    assert len(rows) == 8 and {r["nfe"] for r in rows} == {50}
    execute(tiny_config(models, "flash.max_nfe=3"), str(root / "mixed"), str(tmp_path / "cap"))
    rows = [r for r in OutputStore(str(tmp_path / "cap")).read_metrics().to_pylist() if r["status"] == "ok"]
    assert len(rows) == 8 and max(r["nfe"] for r in rows) <= 3


def test_decode_only_and_fixed_start_take_any_size(setup, tmp_path):
    root, models = setup
    execute(tiny_config(models, "flash.decode_only=true"), str(root / "mixed"), str(tmp_path / "ae"))
    rows = [r for r in OutputStore(str(tmp_path / "ae")).read_metrics().to_pylist() if r["status"] == "ok"]
    assert len(rows) == 8 and {(r["nfe"], r["start_step"], r["tile_steps"]) for r in rows} == {(0, -1, 0)}
    execute(tiny_config(models, "flash.start_step=4"), str(root / "mixed"), str(tmp_path / "fixed"))
    rows = [r for r in OutputStore(str(tmp_path / "fixed")).read_metrics().to_pylist() if r["status"] == "ok"]
    assert len(rows) == 8 and {(r["nfe"], r["start_step"]) for r in rows} == {(5, 4)}
    assert all(r["sigma2_hat"] is not None for r in rows)


def test_a_photo_over_the_per_sample_cost_limit_is_a_cost_row_before_its_solve(setup, tmp_path):
    """execution.max_sample_tile_steps: a photo predicted to cost more tile-steps becomes an error
    row naming its key after severity, before any solve; the rest of the job goes on."""
    root, models = setup
    out = str(tmp_path / "capped")
    summary = execute(tiny_config(models, "models.dtype=float64", "execution.max_sample_tile_steps=60"),
                      str(root / "mixed"), out)
    rows = {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}
    costly = [k for k, r in rows.items() if r["error_kind"] == "cost"]
    assert costly and all(k in rows[k]["error"] and "max_sample_tile_steps=60" in rows[k]["error"] for k in costly)
    assert all(r["tile_steps"] <= 60 for r in rows.values() if r["status"] == "ok")
    assert len(rows) == 9 and summary["ok"] == 8 - len(costly)
    with pytest.raises(ValueError, match="max_sample_tile_steps"):
        tiny_config(models, "execution.max_sample_tile_steps=0")


def _ok_rows(out: str) -> dict:
    return {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist() if r["status"] == "ok"}


def test_start_modes_spend_what_they_promise(setup, tmp_path):
    """image: every tile runs the photo's loop; image-max: every tile runs the worst region's;
    region (the default): each tile its own, never more than image-max's, same loop length."""
    root, models = setup
    runs = {}
    for mode in ("region", "image", "image-max"):
        out = str(tmp_path / mode)
        execute(tiny_config(models, "models.dtype=float64", f"flash.starts={mode}"), str(root / "mixed"), out)
        runs[mode] = _ok_rows(out)
    for key in SIZES:
        region, image, worst = (runs[m][key] for m in ("region", "image", "image-max"))
        assert image["tile_steps"] == image["tiles"] * image["nfe"]
        assert worst["tile_steps"] == worst["tiles"] * worst["nfe"] and worst["nfe"] == region["nfe"]
        assert image["nfe"] <= worst["nfe"] and region["tile_steps"] <= worst["tile_steps"]
        assert region["sigma2_hat"] == image["sigma2_hat"] == worst["sigma2_hat"]  # the mean of the regions'
    for key in ("s0000", "s0001"):   # the prior's own size: one tile, every mode the same row
        assert runs["region"][key]["psnr"] == runs["image"][key]["psnr"] == runs["image-max"][key]["psnr"]


def test_whole_photos_do_not_depend_on_batch_partners_or_tiling_order(setup, tmp_path):
    root, models = setup
    images = {}
    for name, extra in (("batched", ["execution.batch_size=4"]), ("alone", ["execution.batch_size=1"])):
        out = str(tmp_path / name)
        execute(tiny_config(models, "models.dtype=float64", "execution.bucket_width=1000", *extra), str(root / "mixed"),
                out)
        images[name] = output_images(out)
    assert images["batched"].keys() == images["alone"].keys()
    assert all((images["batched"][k] == images["alone"][k]).all() for k in images["alone"])


def test_shifted_tiling_and_its_options_fail_fast_or_run(setup, tmp_path):
    root, models = setup
    out = str(tmp_path / "shifted")
    execute(tiny_config(models, "flash.tiling=shifted"), str(root / "mixed"), out)
    rows = _ok_rows(out)
    assert len(rows) == 8 and all((r["height"], r["width"]) == SIZES[k] for k, r in rows.items() if k in SIZES)
    for bad, match in (("flash.tiling=diagonal", "flash.tiling"), ("flash.starts=pixel", "flash.starts"),
                       ("flash.tile_overlap=-1", "tile_overlap")):
        with pytest.raises(ValueError, match=match):
            tiny_config(models, bad)
    with pytest.raises(ValueError, match="tile_overlap"):   # overlap of a whole 4-px tile: refused before compute
        execute(tiny_config(models, "flash.tile_overlap=4"), str(root / "mixed"), str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "_manifest.json").exists()


@pytest.mark.parametrize("mode", ["region", "image", "image-max"])
def test_estimate_counts_the_tile_steps_the_job_spends(setup, tmp_path, mode):
    """`estimate` prices tiles, not loops: its tile-step total is what the job's rows record."""
    from pipeline.io.shards import list_shards
    from workers.estimate import build_report

    root, models = setup
    cfg = tiny_config(models, "models.dtype=float64", f"flash.starts={mode}", "flash.max_nfe=30")
    report = build_report(cfg, str(root / "mixed"), list_shards(str(root / "mixed")))
    out = str(tmp_path / "run")
    execute(cfg, str(root / "mixed"), out)
    rows = _ok_rows(out).values()
    priced = report["solvers"][cfg.solver.name]
    assert priced["predicted_tile_steps_total"] == sum(r["tile_steps"] for r in rows)
    assert priced["predicted_nfe_total"] == sum(r["nfe"] for r in rows)


def test_inspect_draws_whole_photos_with_their_start_map(setup, tmp_path):
    """Each photo's image json holds where its steps went; `inspect` draws photos.png from it."""
    from PIL import Image
    from typer.testing import CliRunner

    from jobs.cli import app
    from pipeline.inspection.photo_preview import image_meta, pick_photos, start_pixels

    root, models = setup
    out = tmp_path / "out"
    execute(tiny_config(models, "models.dtype=float64"), str(root / "mixed"), str(out))
    store = OutputStore(str(out))
    rows = store.read_metrics().to_pylist()
    picked = pick_photos(store, rows)
    assert sorted(r["key"] for r, _ in picked) == sorted(SIZES)   # native crops carry no map
    for row, start_map in picked:
        starts = start_pixels(start_map, row["height"], row["width"])
        assert starts.shape == (row["height"], row["width"]) and starts.max() == row["start_step"]
        assert sum(s + 1 for line in start_map["starts"] for s in line) == row["tile_steps"]
    native = next(r for r in rows if r["key"] == "s0000")
    assert "start_map" not in image_meta(store, native)
    res = CliRunner().invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    sheet = Image.open(out / "photos.png")
    assert sheet.size[1] > 4 * 100   # a row per photo


def test_start_pixels_take_the_largest_start_of_the_covering_tiles():
    from pipeline.inspection.photo_preview import start_pixels

    m = {"tile_px": 4, "y_px": [0, 2], "x_px": [0], "starts": [[3], [7]]}
    got = start_pixels(m, 5, 4)
    assert got[:2].tolist() == [[3] * 4] * 2 and got[2:].tolist() == [[7] * 4] * 3
