"""Severity encoder (method §2): init from the autoencoder, heads, storage, and its loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models import model_store as ms
from pipeline.models.severity import VARIANCE_LOSSES, SeverityEncoder, severity_loss
from tests.helpers import random_images, tiny_autoencoder


KINDS = ["vq", "kl", "s2d"]


@pytest.mark.parametrize("kind", KINDS)
def test_from_autoencoder_reproduces_scaled_e0_and_starts_at_init_level(kind):
    ae = tiny_autoencoder(kind, scale=0.5, dtype=torch.float64)
    sev = SeverityEncoder.from_autoencoder(ae, init_sigma2=0.02)
    assert sev.kind == ("vq" if kind == "vq" else "kl") and sev.scale == 0.5
    assert next(sev.parameters()).dtype == torch.float64
    y = random_images(3, dtype=torch.float64)
    with torch.no_grad():
        z_hat, sigma2 = sev(y)
        assert torch.equal(z_hat, ae.encode(y))
    # the head's last layer starts at zero: σ̂² is the init level for every image, not the
    # autoencoder's log-variance read as a std (which started ~600× too high)
    assert torch.allclose(sigma2, torch.full((3,), 0.02, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    sev = SeverityEncoder.from_autoencoder(tiny_autoencoder(kind, scale=0.8, dtype=torch.float32))
    with torch.no_grad():
        for p in sev.variance_head.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    fp = ms.save_model(sev, str(tmp_path / "sev"), extra={"role": "severity"})
    got = ms.load_model(str(tmp_path / "sev"), cls=SeverityEncoder)
    assert isinstance(got, SeverityEncoder) and got.scale == 0.8 and got.kind == sev.kind
    assert ms.model_fingerprint(got) == fp
    y = random_images(2, dtype=torch.float32)
    with torch.no_grad():
        a, b = sev(y), got(y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _noisy_latents(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    z_hat = (z0 + 0.3 * torch.randn(z0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    log_var = torch.full(z0.shape, math.log(0.5), dtype=torch.float64, requires_grad=True)
    return z0, z_hat, log_var


def test_loss_terms_match_their_definitions():
    z0, z_hat, log_var = _noisy_latents()
    e = (z_hat - z0).flatten(1)
    got = {v: severity_loss(z_hat, log_var, z0, lambda_sigma=2.0, variance_loss=v) for v in VARIANCE_LOSSES}
    want = {"log": ((math.log(0.5) - e.var(1).log()) ** 2).mean(), "mse": ((e.var(1) - 0.5) ** 2).mean(),
            "nll": (0.5 * (e.pow(2) / 0.5 + math.log(0.5))).mean()}
    for v, out in got.items():
        assert torch.allclose(out["latent"], e.pow(2).mean())
        assert torch.allclose(out["variance"], want[v]), v
        assert torch.allclose(out["total"], out["latent"] + 2.0 * out["variance"]) and out["image"] == 0
        assert torch.allclose(out["sigma2"], torch.tensor(0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="variance_loss"):
        severity_loss(z_hat, log_var, z0, variance_loss="l1")


@pytest.mark.parametrize("variance_loss", VARIANCE_LOSSES)
def test_variance_term_moves_only_the_head_unless_coupled(variance_loss):
    z0, z_hat, log_var = _noisy_latents()
    out = severity_loss(z_hat, log_var, z0, variance_loss=variance_loss)
    gz, gv = torch.autograd.grad(out["variance"], [z_hat, log_var], allow_unused=True)
    assert (gz is None or torch.count_nonzero(gz) == 0) and torch.count_nonzero(gv) > 0
    coupled = severity_loss(z_hat, log_var, z0, variance_loss=variance_loss, couple_variance=True)
    (gz,) = torch.autograd.grad(coupled["variance"], [z_hat])
    assert torch.count_nonzero(gz) > 0


def test_image_term_is_a_weighted_mean():
    ae = tiny_autoencoder("vq", dtype=torch.float64)
    x = random_images(2, dtype=torch.float64)
    z0 = ae.encode(x).detach()
    z_hat = z0 + 0.1
    log_var = torch.zeros_like(z0)
    out = severity_loss(z_hat, log_var, z0, lambda_sigma=0.0, lambda_img=3.0, x=x, decode=ae.decode)
    want = (ae.decode(z_hat) - x).pow(2).mean()
    assert torch.allclose(out["image"], want)
    assert torch.allclose(out["total"], out["latent"] + 3.0 * want)
    with pytest.raises(ValueError, match="decode"):
        severity_loss(z_hat, log_var, z0, lambda_img=1.0)


@pytest.mark.parametrize("variance_loss", VARIANCE_LOSSES)
def test_severity_loss_learns_known_error_variance(variance_loss):
    """ẑ = z0 + √v·ε with known v per image. A variance head on ẑ (a fixed Laplacian, which
    removes the smooth clean latent exactly, then a trainable 1×1 conv giving s, log-variance
    log s²) trained only by severity_loss must recover v in order and within 15 %."""
    levels = torch.tensor([0.03, 0.08, 0.15, 0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)

    def batch(per_level):
        v = levels.repeat_interleave(per_level)
        low = torch.randn(v.numel(), 3, 2, 2, generator=g, dtype=torch.float64)
        z0 = F.interpolate(low, size=(18, 18), mode="bilinear", align_corners=True)  # smooth clean latents
        z_hat = z0 + v.sqrt().view(-1, 1, 1, 1) * torch.randn(z0.shape, generator=g, dtype=torch.float64)
        return z_hat, z0

    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64).expand(3, 1, 3, 3)
    torch.manual_seed(0)
    mix = torch.nn.Conv2d(3, 3, 1).double()
    torch.nn.init.zeros_(mix.bias)

    def log_var_of(z_hat):  # on the interior 16×16, where the Laplacian of z0 vanishes
        s = mix(F.conv2d(z_hat, lap, groups=3))
        return (s.pow(2) + 1e-12).log()

    inner = (..., slice(1, -1), slice(1, -1))

    opt = torch.optim.Adam(mix.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [140], 0.1)
    for _ in range(200):
        z_hat, z0 = batch(8)
        loss = severity_loss(z_hat[inner], log_var_of(z_hat), z0[inner], variance_loss=variance_loss)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        z_hat, z0 = batch(64)
        pred = log_var_of(z_hat).exp().flatten(1).mean(1).view(len(levels), -1).mean(1)
    assert bool((pred[1:] > pred[:-1]).all()), pred
    if variance_loss != "nll":  # the NLL of a per-element s² fitted this way is not calibrated for the mean
        rel = (pred - levels).abs() / levels
        assert bool((rel < 0.15).all()), (pred, levels)


def test_encoder_trains_end_to_end_and_the_head_never_moves_z_hat():
    """A few Adam steps on the real encoder: the loss falls, the encoder and head get gradients,
    and the variance term alone gives the encoder none (the head's inputs are detached)."""
    ae = tiny_autoencoder("s2d", dtype=torch.float32)
    sev = SeverityEncoder.from_autoencoder(ae).train()
    x = random_images(4, dtype=torch.float32)
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z0 = ae.encode(x)
    z_hat, log_var = sev.heads(y)
    severity_loss(z_hat, log_var, z0)["variance"].backward()
    assert all(p.grad is None or not p.grad.any() for p in sev.encoder.parameters())
    assert sev.variance_head.out.weight.grad.abs().sum() > 0
    sev.zero_grad()

    def train(params, term: str, steps: int = 8) -> list[float]:
        opt, values = torch.optim.Adam(params, lr=1e-3), []
        for _ in range(steps):
            out = severity_loss(*sev.heads(y), z0)
            opt.zero_grad()
            out["total"].backward()
            opt.step()
            values.append(out[term].item())
        return values

    latent = train(list(sev.encoder.parameters()), "latent")      # ẑ learns
    variance = train(list(sev.variance_head.parameters()), "variance")  # then the head follows it
    assert latent[-1] < latent[0] and variance[-1] < variance[0]
