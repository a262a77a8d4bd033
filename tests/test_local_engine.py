"""The in-process engine end to end on tiny real models: outputs, resume, exactness, bad samples."""
import pyarrow.parquet as pq
import pytest

from workers.execute import execute
from pipeline.outputs import OutputStore
from tests.pipeline_fixtures import engine_setup, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return engine_setup(tmp_path_factory.mktemp("engine"))


def _images(out):
    import tarfile
    store = OutputStore(out)
    images = {}
    for info in store.read_manifest()["parts"].values():
        with tarfile.open(store.path(info["images"])) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    images[m.name[:-4]] = tar.extractfile(m).read()
    return images


def test_restores_every_sample_once_and_reruns_as_noop(setup, tmp_path):
    root, models, archive = setup
    cfg = tiny_config(models)
    out = str(tmp_path / "out")
    summary = execute(cfg, archive, out)
    assert summary["ok"] == 9 and summary["errors"] == 0
    table = OutputStore(out).read_metrics()
    keys = table.column("key").to_pylist()
    assert sorted(keys) == [f"s{i:04d}" for i in range(9)]
    rows = table.to_pylist()
    for r in rows:
        assert r["status"] == "ok" and r["nfe"] == r["start_step"] + 1 == r["denoiser_calls"]
        assert r["psnr"] is not None and r["ssim"] is not None and r["lpips"] is None
        assert "lpips" in r["metrics_missing"]
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
    assert _images(str(tmp_path / "a")) == _images(str(tmp_path / "b"))


def test_baseline_runs_full_schedule(setup, tmp_path):
    root, models, archive = setup
    execute(tiny_config(models, "flash.enabled=false", "solver.name=unconditional"), archive, str(tmp_path / "o"))
    rows = OutputStore(str(tmp_path / "o")).read_metrics().to_pylist()
    assert {r["nfe"] for r in rows} == {50} and all(r["sigma2_hat"] is None for r in rows)


def test_severity_encoder_of_another_autoencoder_fails_before_compute(setup, tmp_path):
    from pipeline.model_store import load_model, save_model

    root, models, archive = setup
    enc = load_model(str(root / "models" / "severity-inpainting"))
    save_model(enc, str(tmp_path / "sev"), extra={"autoencoder_fingerprint": "0123456789abcdef"})
    cfg = tiny_config(models, f"models.severity.inpainting={tmp_path / 'sev'}")
    with pytest.raises(ValueError, match="trained on autoencoder 0123456789abcdef"):
        execute(cfg, archive, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_hostile_samples_are_one_error_row_each_and_the_job_completes(setup, tmp_path):
    """1×1 and oversized PNGs (checked against the models at read time), an escaping key, a
    link-only key and deeply nested json: each one error row naming its key; the rest restore."""
    import io
    import tarfile

    import torch

    from pipeline.samples import encode_png
    from tests.pipeline_fixtures import archive_samples
    from pipeline.shards import write_shard

    root, models, _ = setup
    good = archive_samples(2, prefix="ok")
    params = good[0]["json"]
    archive = tmp_path / "hostile"
    archive.mkdir()
    write_shard(str(archive / "a.tar"), good + [
        {"__key__": "tiny", "png": torch.rand(3, 1, 1), "json": params},
        {"__key__": "huge", "png": torch.rand(3, 64, 64), "json": params}])
    with tarfile.open(archive / "b.tar", "w") as tar:
        def add(name, data=None, link=None):
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        png = encode_png(torch.rand(3, 16, 16))
        add("../../escape.png", png)
        add("lnk.png", link="/etc/passwd")
        add("deep.png", png)
        add("deep.json", b"[" * 200_000 + b"]" * 200_000)
    out = str(tmp_path / "out")
    summary = execute(tiny_config(models), str(archive), out)
    rows = {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}
    want = {"tiny": "size", "huge": "size", "../../escape": "unsafe_key", "lnk": "link", "deep": "params"}
    assert {k: rows[k]["error_kind"] for k in want} == want
    assert all(k in rows[k]["error"] for k in want)
    assert rows["ok0000"]["status"] == rows["ok0001"]["status"] == "ok"
    assert summary["ok"] == 2 and summary["errors"] == 5 and len(rows) == 7
    assert not any(name.startswith(("/", "..")) for name in _images(out))
    again = execute(tiny_config(models), str(archive), out)
    assert again["samples"] == 0 and len(OutputStore(out).read_metrics()) == 7
