"""Model store: round trips over local/memory/S3 URLs, refusal of bad folders, fingerprints."""
from __future__ import annotations

import json
import os
import uuid

import fsspec
import pytest
import torch

from pipeline.models import model_store as ms
from tests.helpers import random_images, tiny_kl, tiny_latent_diffusion, tiny_unet, tiny_vq


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture
def mem_url():
    url = f"memory://models-{uuid.uuid4().hex[:8]}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_round_trip_local_and_file_url(tmp_path):
    model = tiny_vq(seed=3)
    fp = ms.save_model(model, str(tmp_path / "vq"), extra={"kind": "vq"})
    assert sorted(os.listdir(tmp_path / "vq")) == ["config.json", "diffusion_pytorch_model.safetensors", "flash_model.json"]
    for url in (str(tmp_path / "vq"), f"file://{tmp_path}/vq"):
        loaded, meta = ms.load_model(url, return_meta=True)
        assert type(loaded).__name__ == "VQModel" and meta == {"kind": "vq"}
        _same_weights(model, loaded)
    assert fp == ms.fingerprint(str(tmp_path / "vq")) == ms.model_fingerprint(model)


def test_round_trip_memory_and_dtype(mem_url):
    model = tiny_unet(seed=1)
    ms.save_model(model, mem_url)
    loaded = ms.load_model(mem_url, cls=type(model), dtype=torch.float64)
    assert next(loaded.parameters()).dtype == torch.float64
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 500])
    with torch.no_grad():
        ref = torch.nn.Module.to(model, dtype=torch.float64)(z, t).sample
        assert torch.equal(loaded(z, t).sample, ref)
    with pytest.raises(ValueError, match="not a VQModel"):
        ms.load_model(mem_url, cls=type(tiny_vq()))


def test_round_trip_s3(s3_bucket):
    model = tiny_kl(seed=2)
    url = f"s3://{s3_bucket}/ae/kl"
    fp = ms.save_model(model, url, extra={"kind": "kl"})
    loaded = ms.load_model(url)
    _same_weights(model, loaded)
    assert ms.fingerprint(url) == fp
    assert ms.load_meta(url) == {"kind": "kl"}


def test_latent_diffusion_round_trip(mem_url):
    ldm = tiny_latent_diffusion("vq", dtype=torch.float32, scale=0.7)
    fps = ms.save_latent_diffusion(ldm, f"{mem_url}/ae", f"{mem_url}/unet")
    meta = ms.load_meta(f"{mem_url}/unet")
    assert meta["schedule"] == {"type": "ldm_linear", "T": 1000, "beta_start": 0.0015, "beta_end": 0.0195}
    assert meta["autoencoder_fingerprint"] == fps["autoencoder"] and meta["latent_scale"] == 0.7
    got = ms.load_latent_diffusion(f"{mem_url}/ae", f"{mem_url}/unet", dtype=torch.float64)
    assert got.autoencoder.scale == 0.7 and got.autoencoder.kind == "vq"
    assert torch.equal(got.schedule.alphas_cumprod, ldm.schedule.alphas_cumprod)
    x = random_images(2, dtype=torch.float64)
    with torch.no_grad():
        ref = tiny_latent_diffusion("vq", dtype=torch.float64, scale=0.7).autoencoder.encode(x)
        assert torch.allclose(got.autoencoder.encode(x), ref, atol=1e-6)

    # another autoencoder under the same UNet: refused (or a warning when asked)
    ms.save_model(tiny_vq(seed=9), f"{mem_url}/other")
    with pytest.raises(ValueError, match="fingerprint"):
        ms.load_latent_diffusion(f"{mem_url}/other", f"{mem_url}/unet")
    with pytest.warns(UserWarning, match="fingerprint"):
        ms.load_latent_diffusion(f"{mem_url}/other", f"{mem_url}/unet", on_mismatch="warn")


def test_truncated_safetensors_is_refused(tmp_path):
    url = str(tmp_path / "vq")
    ms.save_model(tiny_vq(), url)
    wfile = tmp_path / "vq" / ms.WEIGHTS_NAME
    data = wfile.read_bytes()
    wfile.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        ms.load_model(url)
    assert url in str(err.value)
    wfile.write_bytes(data[:5])
    with pytest.raises(ValueError, match="truncated"):
        ms.load_model(url)
    with pytest.raises(ValueError, match="truncated"):
        ms.fingerprint(url)


def test_weights_of_another_architecture_are_refused(tmp_path):
    ms.save_model(tiny_vq(), str(tmp_path / "vq"))
    ms.save_model(tiny_kl(), str(tmp_path / "kl"))
    # VQ config with KL weights: keys differ (quantize.*, double_z conv_out shape) -> clear error
    os.replace(tmp_path / "kl" / ms.WEIGHTS_NAME, tmp_path / "vq" / ms.WEIGHTS_NAME)
    with pytest.raises(ValueError, match="do not match the VQModel architecture") as err:
        ms.load_model(str(tmp_path / "vq"))
    assert "missing" in str(err.value) and "quantize.embedding.weight" in str(err.value)

    # same keys, different shapes: a wider UNet's weights under a narrower config
    ms.save_model(tiny_unet(), str(tmp_path / "unet"))
    cfg = json.loads((tmp_path / "unet" / "config.json").read_text())
    cfg["in_channels"] = cfg["out_channels"] = 4
    (tmp_path / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wrong shapes"):
        ms.load_model(str(tmp_path / "unet"))


def test_pickle_only_folder_is_refused(tmp_path, mem_url, monkeypatch):
    folder = tmp_path / "pkl"
    folder.mkdir()
    torch.save(tiny_vq().state_dict(), folder / "diffusion_pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(dict(tiny_vq().config, _class_name="VQModel")))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    with pytest.raises(ValueError, match="pickle"):
        ms.load_model(str(folder))
    fs = fsspec.filesystem("memory")
    fs.put(str(folder), mem_url, recursive=True)
    with pytest.raises(ValueError, match="pickle"):
        ms.load_model(mem_url)


def test_class_allow_list(tmp_path):
    url = str(tmp_path / "vq")
    ms.save_model(tiny_vq(), url)
    cfg = json.loads((tmp_path / "vq" / "config.json").read_text())
    cfg["_class_name"] = "StableDiffusionSafetyChecker"
    (tmp_path / "vq" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not allowed"):
        ms.load_model(url)
    with pytest.raises(ValueError, match="no model folder"):
        ms.load_model(str(tmp_path / "nothing"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_stored_dtype_is_kept(tmp_path, dtype):
    model = torch.nn.Module.to(tiny_vq(seed=4), dtype=dtype)
    fp = ms.save_model(model, str(tmp_path / "m"))
    loaded = ms.load_model(str(tmp_path / "m"))
    assert next(loaded.parameters()).dtype == dtype
    assert ms.model_fingerprint(loaded) == ms.model_fingerprint(model) == fp


def test_fingerprint_stable_and_sensitive(tmp_path):
    a, b = tiny_vq(seed=0), tiny_vq(seed=0)
    assert ms.model_fingerprint(a) == ms.model_fingerprint(b)
    fp = ms.save_model(a, str(tmp_path / "a"))
    assert ms.save_model(b, str(tmp_path / "b")) == fp == ms.fingerprint(str(tmp_path / "a"))
    with torch.no_grad():
        b.decoder.conv_out.bias[0] += 1e-3
    assert ms.model_fingerprint(b) != fp
    assert ms.save_model(b, str(tmp_path / "b")) != fp
    assert ms.fingerprint(str(tmp_path / "b")) == ms.model_fingerprint(b)
    assert ms.model_fingerprint(tiny_vq(seed=1)) != fp
    assert len(fp) == 16 and int(fp, 16) >= 0
