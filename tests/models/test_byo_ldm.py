"""Bring your own LDM: a diffusers pipeline folder laid out as CompVis/ldm-celebahq-256 ships it
(vqvae/ + unet/ + scheduler/ + model_index.json), tiny and random, loads, trains a severity
encoder through the CLI and restores a sample; pickles and unknown schedulers are refused."""
from __future__ import annotations

import json
import math
import shutil
import uuid

import fsspec
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel, VQModel
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.models import model_store as ms
from pipeline.execution.config import load_config
from pipeline.models.pipeline_folder import autoencoder_fingerprint
from pipeline.execution.restorer import build_restorer, prepare_samples
from pipeline.io.samples import Sample, decode_image
from pipeline.sampling.schedules import NoiseSchedule
from pipeline.training.loop import load_frozen_autoencoder
from tests.helpers import archive_samples, tiny_vq

# The CompVis scheduler_config.json values (DDIM, scaled_linear 0.0015 → 0.0195, T = 1000).
COMPVIS_SCHEDULER = {"beta_schedule": "scaled_linear", "beta_start": 0.0015, "beta_end": 0.0195,
                     "num_train_timesteps": 1000, "clip_sample": False}
OLD_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}




def _old_attention_names(folder) -> None:
    """Rename attention weights to the pre-0.14 diffusers names the hub's CompVis files still use."""
    wfile = folder / ms.WEIGHTS_NAME
    state = load_file(str(wfile))
    renamed = {}
    for key, t in state.items():
        for new, old in OLD_ATTENTION.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = t
    save_file(renamed, str(wfile))


def build_pipeline_folder(root) -> str:
    """CompVis classes and layout, scaled down: 16×16 images, VQ-f4 (8-16-16, 64 codes), 2-level UNet."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vqvae = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                        layers_per_block=1, latent_channels=3, num_vq_embeddings=64, norm_num_groups=4,
                        sample_size=16)
        unet = UNet2DModel(sample_size=4, in_channels=3, out_channels=3, layers_per_block=1,
                           block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8)
    vqvae.save_pretrained(root / "vqvae", safe_serialization=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    DDIMScheduler(**COMPVIS_SCHEDULER).save_pretrained(root / "scheduler")
    # as the hub files are: the VQ config predates `scaling_factor`, attention keys use old names
    cfg = json.loads((root / "vqvae" / "config.json").read_text())
    del cfg["scaling_factor"]
    (root / "vqvae" / "config.json").write_text(json.dumps(cfg))
    for sub in ("vqvae", "unet"):
        _old_attention_names(root / sub)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "LDMPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"]}))
    return str(root)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> str:
    return build_pipeline_folder(tmp_path_factory.mktemp("byo") / "ldm-celebahq-tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    from pipeline.corpus.crops import write_corpus_export

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 16
    crops = [(np.clip((0.5 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 5) * (xx + yy) + rng.uniform(0, 6)))[..., None]
                      * rng.uniform(0.2, 0.8, 3), 0, 1) * 255).astype(np.uint8) for _ in range(32)]
    root = tmp_path_factory.mktemp("corpus")
    metas = [{"photo": "synthetic", "short_side": 16, "row": i // 8, "col": i % 8} for i in range(len(crops))]
    write_corpus_export(str(root / "export"), crops, [f"crop{i:03d}" for i in range(len(crops))], metas)
    return str(root / "export")


@pytest.fixture(scope="module")
def encoder(pipe, corpus, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("sev") / "gaussian_blur")
    args = ["train-severity", "--autoencoder", pipe, "--operator", "gaussian_blur", "--data", corpus,
            "--output", out, "--preset", "cpu", "--max-steps", "2", "--batch-size", "8", "--seed", "3",
            "--set", "operator_params.kernel_size=7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def _copy(pipe: str, tmp_path) -> str:
    dst = tmp_path / "copy"
    shutil.copytree(pipe, dst)
    return str(dst)


def test_loads_with_the_schedulers_alphas_and_scale_one(pipe, tmp_path):
    ldm = ms.load_latent_diffusion(pipe, pipe)
    ref = torch.as_tensor(DDIMScheduler(**COMPVIS_SCHEDULER).alphas_cumprod, dtype=torch.float64)
    assert torch.equal(ldm.schedule.alphas_cumprod, ref)
    assert torch.allclose(ldm.schedule.alphas_cumprod, NoiseSchedule.ldm_linear().alphas_cumprod, rtol=1e-5)
    assert ldm.autoencoder.scale == 1.0 and ldm.autoencoder.kind == "vq" and ldm.latent_shape == (3, 4, 4)
    assert ms.load_pipeline_folder(pipe).autoencoder.scale == 1.0
    # the rule: models.autoencoder = the pipeline folder, its vqvae/, or a folder with the same weights
    for ae_url in (pipe + "/", f"{pipe}/vqvae"):
        ms.load_latent_diffusion(ae_url, pipe)
    ms.save_model(tiny_vq(seed=9), str(tmp_path / "other"))
    with pytest.raises(ValueError, match="same folder"):
        ms.load_latent_diffusion(str(tmp_path / "other"), pipe)
    # scale: diffusers' filled-in default 0.18215 is not a VQ scale; an explicit other value is
    copy = _copy(pipe, tmp_path)
    cfg_file = tmp_path / "copy" / "vqvae" / "config.json"
    for value, want in ((0.18215, 1.0), (0.5, 0.5)):
        cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "scaling_factor": value}))
        assert ms.load_latent_diffusion(copy, copy).autoencoder.scale == want
    # fingerprints: whole pipeline for the denoiser, the loaded vqvae for the autoencoder
    fp = ms.fingerprint(pipe)
    assert len(fp) == 16 and fp != ms.fingerprint(copy)
    assert autoencoder_fingerprint(pipe) == autoencoder_fingerprint(f"{pipe}/vqvae")
    # any fsspec URL: the same folder in memory
    mem = f"memory://byo-{uuid.uuid4().hex[:8]}"
    fsspec.filesystem("memory").put(pipe, mem, recursive=True)
    try:
        got = ms.load_latent_diffusion(mem, mem)
        assert torch.equal(got.schedule.alphas_cumprod, ref) and ms.fingerprint(mem) == fp
    finally:
        fsspec.filesystem("memory").rm(mem, recursive=True)


def test_train_severity_for_the_pipeline(pipe, encoder):
    enc, meta = ms.load_model(encoder, return_meta=True)
    assert type(enc).__name__ == "SeverityEncoder" and meta["operator"] == "gaussian_blur"
    assert meta["latent_scale"] == 1.0 and meta["autoencoder_fingerprint"] == autoencoder_fingerprint(pipe)
    ae, _ = load_frozen_autoencoder(pipe, torch.device("cpu"))
    with torch.no_grad():
        z, s2 = enc(torch.zeros(2, 3, 16, 16))
        assert z.shape == ae.encode(torch.zeros(2, 3, 16, 16)).shape == (2, 3, 4, 4) and s2.shape == (2,)


def test_restore_a_sample_through_the_pipeline(pipe, encoder):
    cfg = load_config(None, [f"models.autoencoder={pipe}", f"models.denoiser={pipe}",
                             f'models.severity={{"gaussian_blur": "{encoder}"}}', "models.device=cpu",
                             "execution.engine=local", "execution.batch_size=2", "solver.sampler=ddim",
                             "solver.steps=20"])
    cfg.models.severity = {"gaussian_blur": encoder}  # the merge keeps the default families' (absent) encoders
    r = build_restorer(cfg)
    samples = [Sample(d["__key__"], "byo", decode_image(d["png"], d["__key__"]), d["clean.png"], d["json"], "")
               for d in archive_samples(2, families=("gaussian_blur",))]
    rows = [row for row, _, _ in r.solve(r.estimate(prepare_samples(cfg, samples)))]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and math.isfinite(row["psnr"]) and row["nfe"] > 0
        assert row["model_hash"].split("+") == [autoencoder_fingerprint(pipe), ms.fingerprint(pipe),
                                                ms.fingerprint(encoder)]


def test_pickles_and_unknown_schedulers_are_refused(pipe, tmp_path, monkeypatch):
    copy = _copy(pipe, tmp_path)
    unet = tmp_path / "copy" / "unet"
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    # a pickle next to the safetensors file is never read
    (unet / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    ms.load_latent_diffusion(copy, copy)
    # a component whose only weights are pickled is refused, locally and through train-severity
    (unet / ms.WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match="pickle"):
        ms.load_latent_diffusion(copy, copy)
    (tmp_path / "copy" / "vqvae" / ms.WEIGHTS_NAME).rename(tmp_path / "copy" / "vqvae" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        load_frozen_autoencoder(copy, torch.device("cpu"))

    sched = tmp_path / "copy2"
    shutil.copytree(pipe, sched)
    cfg_file = sched / "scheduler" / "scheduler_config.json"
    base = json.loads(cfg_file.read_text())
    for change, message in (({"_class_name": "StableDiffusionSafetyChecker"}, "scheduler class .* is not allowed"),
                            ({"prediction_type": "sample"}, "prediction_type")):
        cfg_file.write_text(json.dumps({**base, **change}))
        with pytest.raises(ValueError, match=message):
            ms.load_latent_diffusion(str(sched), str(sched))
    cfg_file.write_text(json.dumps({**base, "prediction_type": "v_prediction"}))  # converted to ε for the solvers
    assert ms.load_latent_diffusion(str(sched), str(sched)).prediction == "v_prediction"
