"""Severity encoder (flash-spec §2): init from the autoencoder, heads, storage, and its loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline import model_store as ms
from pipeline.severity import SeverityEncoder, severity_loss
from tests.factories import random_images, tiny_autoencoder


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_from_autoencoder_reproduces_scaled_e0(kind):
    ae = tiny_autoencoder(kind, scale=0.5, dtype=torch.float64)
    sev = SeverityEncoder.from_autoencoder(ae)
    assert sev.config.kind == kind and sev.scale == 0.5
    assert next(sev.parameters()).dtype == torch.float64
    y = random_images(3, dtype=torch.float64)
    with torch.no_grad():
        z_hat, sigma2 = sev(y)
        assert torch.equal(z_hat, ae.encode(y))
    assert sigma2.shape == (3,) and bool((sigma2 >= 0).all())
    if kind == "vq":
        assert sev.std_conv.weight.shape == (3, 3, 1, 1) and sev.std_conv.bias.shape == (3,)
    else:  # s starts as the autoencoder's log-variance head, read as a std
        with torch.no_grad():
            logvar = ae.model.quant_conv(ae.model.encoder(y)).chunk(2, dim=1)[1]
        assert torch.allclose(sigma2, logvar.pow(2).flatten(1).mean(1))


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_save_load_round_trip(kind, tmp_path):
    sev = SeverityEncoder.from_autoencoder(tiny_autoencoder(kind, scale=0.8, dtype=torch.float32))
    fp = ms.save_model(sev, str(tmp_path / "sev"), extra={"role": "severity"})
    got = ms.load_model(str(tmp_path / "sev"), cls=SeverityEncoder)
    assert isinstance(got, SeverityEncoder) and got.scale == 0.8 and got.config.kind == kind
    assert ms.model_fingerprint(got) == fp
    y = random_images(2, dtype=torch.float32)
    with torch.no_grad():
        a, b = sev(y), got(y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_loss_terms_and_variance_gradient():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    z_hat = (z0 + 0.3 * torch.randn(z0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    sigma2 = torch.full((4,), 0.5, dtype=torch.float64, requires_grad=True)
    out = severity_loss(z_hat, sigma2, z0, lambda_sigma=2.0)
    e = (z_hat - z0).flatten(1)
    assert torch.allclose(out["latent"], e.pow(2).mean())
    assert torch.allclose(out["variance"], ((e.var(1) - 0.5) ** 2).mean())
    assert torch.allclose(out["total"], out["latent"] + 2.0 * out["variance"]) and out["image"] == 0

    # stop-gradient target: the variance term moves only σ̂²; the coupled variant moves ẑ too
    gz, gs = torch.autograd.grad(out["variance"], [z_hat, sigma2], allow_unused=True)
    assert (gz is None or torch.count_nonzero(gz) == 0) and torch.count_nonzero(gs) == 4
    coupled = severity_loss(z_hat, sigma2, z0, couple_variance=True)
    (gz,) = torch.autograd.grad(coupled["variance"], [z_hat])
    assert torch.count_nonzero(gz) > 0


def test_image_term_is_a_weighted_mean():
    ae = tiny_autoencoder("vq", dtype=torch.float64)
    x = random_images(2, dtype=torch.float64)
    z0 = ae.encode(x).detach()
    z_hat = z0 + 0.1
    sigma2 = torch.zeros(2, dtype=torch.float64)
    out = severity_loss(z_hat, sigma2, z0, lambda_sigma=0.0, lambda_img=3.0, x=x, decode=ae.decode)
    want = (ae.decode(z_hat) - x).pow(2).mean()
    assert torch.allclose(out["image"], want)
    assert torch.allclose(out["total"], out["latent"] + 3.0 * want)
    with pytest.raises(ValueError, match="decode"):
        severity_loss(z_hat, sigma2, z0, lambda_img=1.0)


def test_severity_loss_learns_known_error_variance():
    """ẑ = z0 + √v·ε with known v per image. A variance head on ẑ (a fixed Laplacian, which
    removes the smooth clean latent exactly, then a trainable 1×1 conv giving a std map s;
    σ̂² = mean s² as in the encoder) trained only by severity_loss must recover v."""
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

    def sigma2_of(z_hat):
        return mix(F.conv2d(z_hat, lap, groups=3)).pow(2).flatten(1).mean(1)

    opt = torch.optim.Adam(mix.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [140], 0.1)
    for _ in range(200):
        z_hat, z0 = batch(8)
        loss = severity_loss(z_hat, sigma2_of(z_hat), z0)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        z_hat, z0 = batch(64)
        pred = sigma2_of(z_hat).view(len(levels), -1).mean(1)
    rel = (pred - levels).abs() / levels
    assert bool((rel < 0.15).all()), (pred, levels)
    assert bool((pred[1:] > pred[:-1]).all())


def test_encoder_trains_end_to_end():
    """A few Adam steps on the real encoder: the loss falls and every part gets gradients."""
    ae = tiny_autoencoder("vq", dtype=torch.float32)
    sev = SeverityEncoder.from_autoencoder(ae).train()
    x = random_images(4, dtype=torch.float32)
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z0 = ae.encode(x)
    opt = torch.optim.Adam(sev.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        z_hat, sigma2 = sev(y)
        loss = severity_loss(z_hat, sigma2, z0)["total"]
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert sev.std_conv.weight.grad.abs().sum() > 0
            assert sev.encoder.conv_in.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
