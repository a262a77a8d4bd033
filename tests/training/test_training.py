"""Training commands on a tiny synthetic corpus: outputs load, resume is exact, Ray Train runs, bad URLs fail fast."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.training.config import build_config
from pipeline.models.model_store import load_latent_diffusion, load_meta, load_model
from pipeline.operators import OPERATORS

TINY_AE = ["model.block_out_channels=[8, 16]", "model.stage_layers=[1, 1]", "model.latent_channels=3",
           "model.norm_num_groups=4", "loss.latent_scale_samples=32"]
TINY_UNET = ["model.block_out_channels=[8, 16]", "model.norm_num_groups=4", "model.attention_resolutions=[2]",
             "model.attention_head_dim=8", "optim.ema_decay=0.9"]
SEVERITY_PARAMS = {name: [f"operator_params.{k}={json.dumps(v)}" for k, v in cls.example_params(16, 16)[0].items()]
                   for name, cls in OPERATORS.items()}   # fits the 16 px corpus


def _textures(n: int = 64, size: int = 16, seed: int = 0) -> np.ndarray:
    """Random smooth-plus-stripes crops: cheap, varied, and not pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f, phase, color = rng.uniform(1, 6), rng.uniform(0, 6.3), rng.uniform(0.2, 0.8, 3)
        stripes = 0.5 + 0.4 * np.sin(2 * np.pi * f * (xx * rng.uniform(-1, 1) + yy) + phase)
        img = stripes[..., None] * color + rng.normal(0, 0.05, (size, size, 3))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.stack(out)




@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    from pipeline.corpus.crops import write_corpus_export

    root = tmp_path_factory.mktemp("corpus")
    crops = _textures()
    metas = [{"photo": "synthetic", "short_side": 16, "row": i // 8, "col": i % 8} for i in range(len(crops))]
    write_corpus_export(str(root / "export"), list(crops), [f"crop{i:03d}" for i in range(len(crops))], metas)
    return str(root / "export")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _train(kind: str, corpus: str, out, *extra: str, steps: int = 2, sets: list[str] = ()) -> str:
    args = [f"train-{kind}", "--data", corpus, "--output", str(out), "--preset", "cpu", "--max-steps", str(steps),
            "--batch-size", "8", "--seed", "3", *extra]
    for s in sets:
        args += ["--set", s]
    _cli(*args)
    return str(out)


@pytest.fixture(scope="module")
def autoencoder(corpus, tmp_path_factory) -> str:
    return _train("autoencoder", corpus, tmp_path_factory.mktemp("ae") / "model", sets=TINY_AE)


def test_train_autoencoder_writes_loadable_model_and_card(autoencoder):
    model = load_model(autoencoder)
    assert type(model).__name__ == "SpaceToDepthAutoencoder"
    from pipeline.models.space_to_depth_autoencoder import SpaceToDepthAutoencoder

    again = SpaceToDepthAutoencoder.from_pretrained(autoencoder)  # its own class loads the folder too
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    meta = load_meta(autoencoder)
    assert meta["role"] == "autoencoder" and meta["kind"] == "kl" and meta["latent_scale"] > 0
    card = open(os.path.join(autoencoder, "MODEL_CARD.md")).read()
    for needle in ("steps: 2", "batch: 8", "seed: 3", "machine:", "final losses", "train-autoencoder", "latent scale"):
        assert needle in card
    assert os.path.exists(os.path.join(autoencoder, "checkpoint", "state.json"))


def test_train_vq_autoencoder_from_shards(corpus, tmp_path):
    from pipeline.io.shards import write_shard

    crops = _textures(16, seed=1)
    shard = tmp_path / "clean-000000.tar"
    write_shard(str(shard), [{"__key__": f"c{i:02d}", "png": torch.from_numpy(c).permute(2, 0, 1).float() / 255}
                             for i, c in enumerate(crops)])
    out = _train("autoencoder", str(tmp_path), tmp_path / "vq", sets=TINY_AE + ["model.kind=vq", "model.block_out_channels=[8, 16, 16]",
                                                                                 "model.num_vq_embeddings=16"])
    assert type(load_model(out)).__name__ == "VQModel"
    assert load_meta(out)["kind"] == "vq"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_train_ldm_loads_as_latent_diffusion(corpus, autoencoder, tmp_path, prediction):
    out = _train("ldm", corpus, tmp_path / "ldm", "--autoencoder", autoencoder,
                 sets=TINY_UNET + [f"model.prediction_type={prediction}"])
    ldm = load_latent_diffusion(os.path.join(out, "autoencoder"), out)
    assert ldm.prediction == prediction and load_meta(out)["prediction_type"] == prediction
    assert ldm.autoencoder.scale == pytest.approx(load_meta(autoencoder)["latent_scale"])
    assert ldm.latent_shape == (3, 4, 4) and ldm.schedule.num_timesteps == 1000
    load_latent_diffusion(autoencoder, out)  # the original autoencoder folder matches too (same fingerprint)
    assert "final losses" in open(os.path.join(out, "MODEL_CARD.md")).read()


@pytest.mark.parametrize("operator", sorted(SEVERITY_PARAMS))
def test_train_severity(corpus, autoencoder, tmp_path, operator):
    out = _train("severity", corpus, tmp_path / operator, "--autoencoder", autoencoder, "--operator", operator,
                 sets=SEVERITY_PARAMS[operator])
    enc = load_model(out)
    assert type(enc).__name__ == "SeverityEncoder"
    meta = load_meta(out)
    assert meta["operator"] == operator and meta["noise_sigma"] == 0.05
    z, s2 = enc(torch.zeros(2, 3, 16, 16))
    assert z.shape == (2, 3, 4, 4) and s2.shape == (2,)


def _weights(folder: str) -> dict:
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def test_train_estimator_learns_the_severity_of_its_family(corpus, tmp_path):
    """No autoencoder: its own small model, saved with its role, reading t̂ and a std per image."""
    out = _train("estimator", corpus, tmp_path / "est", "--operator", "gaussian_blur", steps=3,
                 sets=SEVERITY_PARAMS["gaussian_blur"] + ["model.channels=4", "model.hidden=8"])
    model, meta = load_model(out, return_meta=True)
    assert type(model).__name__ == "ParameterEstimator"
    assert meta["role"] == "estimator" and meta["operator"] == "gaussian_blur" and meta["noise_sigma_range"] == [0.0, 0.1]
    t, log_var = model(torch.zeros(2, 3, 16, 16))
    assert t.shape == log_var.shape == (2,) and ((t >= 0) & (t <= 1)).all()


@pytest.mark.parametrize("kind", ["autoencoder", "ldm", "severity", "estimator"])
def test_resume_equals_uninterrupted(corpus, autoencoder, tmp_path, kind):
    extra, sets = [], TINY_AE
    if kind == "estimator":
        extra, sets = ["--operator", "gaussian_blur"], SEVERITY_PARAMS["gaussian_blur"] + ["model.channels=4"]
    elif kind != "autoencoder":
        extra, sets = ["--autoencoder", autoencoder], TINY_UNET if kind == "ldm" else SEVERITY_PARAMS["gaussian_blur"]
    full = _train(kind, corpus, tmp_path / "full", *extra, steps=4, sets=sets)
    _train(kind, corpus, tmp_path / "split", *extra, steps=2, sets=sets)
    split = _train(kind, corpus, tmp_path / "split", *extra, steps=4, sets=sets)
    a, b = _weights(full), _weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert "started at step 2" in open(os.path.join(split, "MODEL_CARD.md")).read()


def test_resume_refuses_a_different_model_config(corpus, tmp_path):
    _train("autoencoder", corpus, tmp_path / "m", steps=1, sets=TINY_AE)
    result = CliRunner().invoke(app, ["train-autoencoder", "--data", corpus, "--output", str(tmp_path / "m"),
                                      "--preset", "cpu", "--max-steps", "2", "--batch-size", "8", "--seed", "3",
                                      *sum((["--set", s] for s in TINY_AE + ["loss.mse=1.0"]), [])])
    assert result.exit_code == 2 and "different config" in result.output


def test_ray_train_two_workers(corpus, tmp_path):
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.environ["RAY_TMPDIR"] = temp
    os.environ["FLASH_RAY_STORAGE"] = str(tmp_path / "ray-results")
    try:
        out = _train("autoencoder", corpus, tmp_path / "ray", "--workers", "2", sets=TINY_AE)
    finally:
        os.environ.pop("RAY_TMPDIR")
        os.environ.pop("FLASH_RAY_STORAGE")
        shutil.rmtree(temp, ignore_errors=True)
    assert type(load_model(out)).__name__ == "SpaceToDepthAutoencoder"
    assert "over 2 worker(s)" in open(os.path.join(out, "MODEL_CARD.md")).read()
    # Each rank trains on half of every global batch, so the all-reduced losses equal a local run's.
    local = _train("autoencoder", corpus, tmp_path / "local", sets=TINY_AE)
    ray_losses, local_losses = (json.load(open(os.path.join(o, "checkpoint", "state.json")))["last_losses"]
                                for o in (out, local))
    assert ray_losses == pytest.approx(local_losses, rel=1e-4)


@pytest.mark.parametrize("args, message", [
    (["train-autoencoder", "--data", "/nonexistent/corpus"], "/nonexistent/corpus"),
    (["train-ldm", "--autoencoder", "/nonexistent/ae"], "/nonexistent/ae"),
    (["train-severity", "--autoencoder", "/nonexistent/ae", "--operator", "blurry"], "--operator"),
    (["train-autoencoder", "--set", "model.kindd=kl"], "unknown key"),
])
def test_bad_inputs_fail_fast(corpus, tmp_path, args, message):
    if "--data" not in args:
        args = args + ["--data", corpus]
    result = CliRunner().invoke(app, args + ["--output", str(tmp_path / "o"), "--preset", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", "")
    assert not os.path.exists(tmp_path / "o" / "checkpoint")


def test_config_layers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\nrun:\n  batch_size: 12\n")
    cfg = build_config("ldm", "gpu", str(path), ["run.seed=7"],
                       {"data.url": "x", "output": "y", "autoencoder": "z", "run.batch_size": 24})
    assert cfg.optim.lr == 1e-3 and cfg.run.seed == 7 and cfg.run.batch_size == 24
    assert cfg.model.block_out_channels == [64, 128, 256] and cfg.model.attention_resolutions == [8, 4]
    with pytest.raises(ValueError, match="multiple"):
        build_config("autoencoder", "cpu", None, ["run.workers=3"], {"data.url": "x", "output": "y"})
