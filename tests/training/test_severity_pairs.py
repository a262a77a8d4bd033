"""Same-crop pairs for the severity encoder: the paired-difference term, the paired batches,
and retraining a trained encoder's head (`init`, `loss.freeze_mean`).

Why: pooled over crops, σ̂² learns content faster than damage; the difference of two
severities of one crop cancels the content, which is what lifts the within-crop ordering
(docs/model-design.md, "Severity encoder")."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.model_store import save_model
from pipeline.models.severity import severity_loss
from pipeline.training.config import SeverityJob
from pipeline.training.tasks import SeverityTask, load_severity_init
from tests.helpers import random_images, tiny_autoencoder

LOSS = {"lambda_sigma": 1.0, "lambda_img": 0.0, "variance_loss": "log", "couple_variance": False,
        "head_channels": 8, "init_sigma2": 0.03, "head_lr_scale": 10.0, "pair_weight": 3.0, "freeze_mean": False}


def _latents(rows: int = 6):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(rows, 3, 4, 4, generator=g, dtype=torch.float64)
    z_hat = z0 + torch.linspace(0.1, 0.6, rows, dtype=torch.float64).view(-1, 1, 1, 1) * torch.randn(
        z0.shape, generator=g, dtype=torch.float64)
    log_s2 = torch.linspace(-3, -1, rows, dtype=torch.float64)
    return z0, z_hat, log_s2.view(-1, 1, 1, 1).expand_as(z0)


def test_pair_term_is_the_squared_difference_of_log_errors_within_pairs():
    z0, z_hat, log_var = _latents()
    out = severity_loss(z_hat, log_var, z0, lambda_sigma=2.0, pair_weight=3.0)
    d = log_var[:, 0, 0, 0] - (z_hat - z0).flatten(1).var(1).log()
    want = ((d[0::2] - d[1::2]) ** 2).mean()
    assert torch.allclose(out["pair"], want)
    assert torch.allclose(out["total"], out["latent"] + 2.0 * (out["variance"] + 3.0 * want))
    assert severity_loss(z_hat, log_var, z0)["pair"] == 0


def test_pair_term_ignores_what_a_pair_shares():
    """An offset common to both rows of a pair (the crop's content) costs nothing in the pair term."""
    z0, z_hat, _ = _latents()
    log_err = (z_hat - z0).flatten(1).var(1).log()
    shared = torch.tensor([0.7, 0.7, -1.2, -1.2, 2.0, 2.0], dtype=torch.float64)
    log_var = (log_err + shared).view(-1, 1, 1, 1).expand_as(z0)
    out = severity_loss(z_hat, log_var, z0, pair_weight=5.0)
    assert out["pair"] < 1e-20 and out["variance"] > 0.5
    with pytest.raises(ValueError, match="pairs"):
        severity_loss(z_hat[:5], log_var[:5], z0[:5], pair_weight=1.0)


def test_paired_batches_hold_one_crop_at_two_severities():
    ae = tiny_autoencoder("s2d", dtype=torch.float32)
    images = ((random_images(12, 16, seed=3) + 1) * 127.5).to(torch.uint8)
    task = SeverityTask(images, ae, "inpainting", 0.05, {}, LOSS, seed=0)
    index, flip = torch.arange(8), torch.tensor([True, False] * 4)
    for rows in (slice(0, 8), slice(4, 8)):
        batch = task.inputs(5, index, flip, rows, "cpu")
        x, y = batch["x"], batch["y"]
        assert len(x) == rows.stop - rows.start
        assert torch.equal(x[0::2], x[1::2])                     # same clean crop (and flip) per pair
        assert not torch.equal(x[0::2][0], x[0::2][1])           # different crops across pairs
        assert (y[0::2] - y[1::2]).abs().amax(dim=(1, 2, 3)).min() > 0   # independent severities and noise
    unpaired = SeverityTask(images, ae, "inpainting", 0.05, {}, {**LOSS, "pair_weight": 0.0}, seed=0)
    x = unpaired.inputs(5, index, flip, slice(0, 8), "cpu")["x"]
    assert not torch.equal(x[0], x[1])


def test_odd_rows_per_worker_fail_before_training():
    job = SeverityJob(output="/tmp/x", autoencoder="a")
    job.data.url = "data/corpus/train"
    job.run.batch_size, job.run.workers = 6, 2
    with pytest.raises(ValueError, match="even"):
        job.validate()


def test_init_copies_a_trained_encoder_and_freeze_mean_trains_the_head_only(tmp_path):
    ae = tiny_autoencoder("s2d", dtype=torch.float32)
    images = ((random_images(8, 16, seed=4) + 1) * 127.5).to(torch.uint8)
    first = SeverityTask(images, ae, "inpainting", 0.05, {}, LOSS, seed=0)
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(0.01)
    url = str(tmp_path / "sev")
    first.save(first.model, url, {})
    task = SeverityTask(images, ae, "inpainting", 0.05, {}, {**LOSS, "freeze_mean": True}, seed=1, init=url)
    for (name, a), b in zip(task.model.named_parameters(), first.model.parameters()):
        assert torch.equal(a, b), name
        assert a.requires_grad == name.startswith("variance_head."), name
    reset = SeverityTask(images, ae, "inpainting", 0.05, {}, {**LOSS, "reset_head": True}, seed=1, init=url).model
    for (name, a), b in zip(reset.named_parameters(), first.model.parameters()):
        assert torch.equal(a, b) != name.startswith("variance_head."), name   # mean kept, head afresh
    assert torch.all(reset.variance_head.out.weight == 0)
    with pytest.raises(ValueError, match="not a severity encoder for 'gaussian_blur'"):
        load_severity_init(url, "gaussian_blur", ae)
    with pytest.raises(ValueError, match="another autoencoder"):
        load_severity_init(url, "inpainting", tiny_autoencoder("s2d", seed=9, dtype=torch.float32))
    other = tmp_path / "ae"
    save_model(ae.model, str(other), extra={"role": "autoencoder"})
    with pytest.raises(ValueError, match="not a severity encoder"):
        load_severity_init(str(other), "inpainting", ae)
    assert math.isfinite(float(task.module(**task.inputs(0, torch.arange(4), torch.zeros(4, dtype=torch.bool),
                                                         slice(0, 4), "cpu"))["loss"].detach()))


def test_band_head_reads_fine_detail_and_starts_afresh_from_a_bandless_init(tmp_path):
    """`loss.head_bands`: the finest band's energy falls as blur grows, and `reset_head` keeps a
    bandless encoder's mean head while the band head starts at σ̂² = init_sigma2."""
    from pipeline.operators.gaussian_blur import blur_reflect, gaussian_kernel_1d, stack_kernels

    ae = tiny_autoencoder("s2d", dtype=torch.float32)
    images = ((random_images(8, 16, seed=5) + 1) * 127.5).to(torch.uint8)
    plain = SeverityTask(images, ae, "inpainting", 0.05, {}, LOSS, seed=0)
    url = str(tmp_path / "sev")
    plain.save(plain.model, url, {})
    banded = SeverityTask(images, ae, "inpainting", 0.05, {}, {**LOSS, "head_bands": 2, "reset_head": True},
                          seed=1, init=url).model
    for name, p in plain.model.named_parameters():
        if not name.startswith("variance_head."):
            assert torch.equal(p, dict(banded.named_parameters())[name]), name
    y = random_images(1, 16, seed=6).float()
    _, s2 = banded(y)
    assert torch.allclose(s2, torch.tensor([0.03]))
    fine = []
    for std in (0.3, 1.0, 2.0):
        g = gaussian_kernel_1d(std, 9)
        fine.append(float(banded.variance_head.band_energies(blur_reflect(y, stack_kernels([g.outer(g)])))[0, 0]))
    assert fine[0] > fine[1] > fine[2]
    with pytest.raises(ValueError, match="head_bands"):
        type(banded)(autoencoder_config=dict(ae.model.config), head_bands=9)


def test_noise_range_draws_each_rows_sigma_and_reduces_to_the_fixed_noise(monkeypatch):
    from pipeline.operators import OPERATORS

    ae = tiny_autoencoder("s2d", dtype=torch.float32)
    images = ((random_images(12, 16, seed=3) + 1) * 127.5).to(torch.uint8)
    index, flip, rows = torch.arange(8), torch.zeros(8, dtype=torch.bool), slice(0, 8)
    loss = {**LOSS, "pair_weight": 0.0}
    fixed = SeverityTask(images, ae, "inpainting", 0.05, {}, loss, seed=0)
    same = SeverityTask(images, ae, "inpainting", 0.05, {}, loss, seed=0, noise_sigma_max=0.05)
    assert torch.equal(fixed.inputs(3, index, flip, rows, "cpu")["y"], same.inputs(3, index, flip, rows, "cpu")["y"])
    seen, params_for = [], OPERATORS["inpainting"].params_for
    monkeypatch.setattr(OPERATORS["inpainting"], "params_for",
                        lambda t, sigma, seed, **kw: seen.append(sigma) or params_for(t, sigma, seed, **kw))
    ranged = SeverityTask(images, ae, "inpainting", 0.0, {}, loss, seed=0, noise_sigma_max=0.1)
    seen.clear()
    ranged.inputs(3, index, flip, rows, "cpu")
    ranged.inputs(4, index, flip, rows, "cpu")
    assert len(seen) == 16 and len(set(seen)) == 16 and all(0.0 <= s <= 0.1 for s in seen)
    assert max(seen) - min(seen) > 0.05                           # spread over the range, not one value
    job = SeverityJob(output="/tmp/x", autoencoder="a", noise_sigma=0.05, noise_sigma_max=0.01)
    job.data.url = "data/corpus/train"
    with pytest.raises(ValueError, match="noise_sigma_max"):
        job.validate()
