"""The severity encoder S_θ(y) = (ẑ, σ̂²) and its training loss (docs/model-design.md).

Why: the predicted latent-error variance σ̂² picks the reverse-diffusion step a sample
starts from (`Sampler.start_index`), so easy images run few denoiser steps.
  * Mean head: a fine-tuned copy of the autoencoder's encoder side (E0: encoder, plus
    quant_conv where the first stage has one; for a KL first stage its mean half).
    Before training ẑ = scale · E0(y) exactly.
  * Variance head (`VarianceHead`): two 3×3 convolutions on (ẑ, the encoder's last hidden
    features, the degraded image folded to the latent grid by space-to-depth), the log of
    each map's mean energy, then a linear layer: one log σ̂² per image, broadcast over ẑ's
    shape as the log-variance map the loss takes. It sees the pixels, so it can tell a
    textured crop from a flat one (whose latent error differs at the same blur). Its last
    layer starts at zero with bias log(init_sigma2), so σ̂² starts at the target level.
    Reading the autoencoder's own log-variance channels as the std map (the reference's KL
    head) starts σ̂² some 600× too high, and pulling it down destroyed the ordering
    (docs/model-design.md, "Severity encoder").
  * The head's inputs are detached: its loss trains the head only and never moves ẑ.
σ̂² is measured in scaled latent units, those of the sampler's SNR grid.

Cost: one encoder forward per image plus two small convolutions at latent resolution.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from pipeline.models.latent import autoencoder_class as first_stage_class

VARIANCE_LOSSES = ("log", "mse", "nll")


class VarianceHead(nn.Module):
    """(ẑ, encoder features, space-to-depth(y)) → one log σ̂² per image.

    A 3×3 convolution bank at latent resolution, a second one on its SiLU, then the log of
    each map's mean energy over the image and a linear layer. Log energies make the
    prediction a weighted sum of log band energies, which is how blur (high- against
    low-frequency energy) and texture (what blur can destroy) combine into log σ². The
    linear weight starts at zero and its bias at log(init_sigma2).

    With `bands` > 0 the head also reads the log energies of a Laplacian pyramid of the grey
    degraded image at full resolution (`bands` levels and the coarse residual's variance),
    through one small hidden layer: a fixed, content-light measure of how much fine detail
    survives, which is what blur removes (docs/model-design.md, "Band energies of y")."""

    def __init__(self, in_channels: int, channels: int, init_sigma2: float, bands: int = 0):
        super().__init__()
        self.bands = int(bands)
        self.norm = nn.GroupNorm(1, in_channels, affine=False)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        hidden = 32 if self.bands else 0
        if self.bands:
            self.band_mlp = nn.Sequential(nn.Linear(self.bands + 1, hidden), nn.SiLU())
        self.out = nn.Linear(2 * channels + hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(init_sigma2))

    @staticmethod
    def _log_energy(h: torch.Tensor) -> torch.Tensor:
        return h.pow(2).flatten(2).mean(dim=2).add(1e-6).log()

    def band_energies(self, y: torch.Tensor) -> torch.Tensor:
        """(B, bands+1): log mean energy of each Laplacian level of grey y, then the residual's."""
        g = y.mean(dim=1, keepdim=True)
        out = []
        for _ in range(self.bands):
            if min(g.shape[-2:]) < 2:
                raise ValueError(f"head bands={self.bands} need an image of at least {2 ** self.bands} px")
            coarse = F.avg_pool2d(g, 2)
            out.append(self._log_energy(g[..., :coarse.shape[-2] * 2, :coarse.shape[-1] * 2]
                                        - F.interpolate(coarse, scale_factor=2, mode="nearest")))
            g = coarse
        out.append(g.flatten(1).var(dim=1, keepdim=True).add(1e-6).log())
        return torch.cat(out, dim=1)

    def hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two convolution maps whose mean energies the head reads (local, so they tile)."""
        h1 = self.conv1(self.norm(inputs))
        return h1, self.conv2(F.silu(h1))

    def predict(self, log_energies: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log σ̂² (B,) from the maps' log mean energies (B, 2·channels) and, with bands, y itself."""
        feats = [log_energies]
        if self.bands:
            feats.append(self.band_mlp(self.band_energies(y)))
        return self.out(torch.cat(feats, dim=1)).squeeze(1)

    def forward(self, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h1, h2 = self.hidden(inputs)
        return self.predict(torch.cat([self._log_energy(h1), self._log_energy(h2)], dim=1), y)


class SeverityEncoder(ModelMixin, ConfigMixin):
    """Mean head (a copy of E0, times `scale`) and a per-image variance head σ̂²."""

    @register_to_config
    def __init__(
        self,
        autoencoder_class: str = "SpaceToDepthAutoencoder",
        autoencoder_config: dict | None = None,
        downsample: int = 4,
        latent_channels: int = 8,
        scale: float = 1.0,
        head_channels: int = 64,
        init_sigma2: float = 0.03,
        head_bands: int = 0,
    ):
        super().__init__()
        if not init_sigma2 > 0 or downsample < 1 or head_channels < 1 or not 0 <= head_bands <= 8:
            raise ValueError("init_sigma2 must be > 0, downsample and head_channels ≥ 1, head_bands in 0..8")
        first_stage = first_stage_class(autoencoder_class).from_config(dict(autoencoder_config or {}))
        self.encoder = first_stage.encoder
        self.quant_conv = getattr(first_stage, "quant_conv", None)
        self.kind = "vq" if autoencoder_class == "VQModel" else "kl"
        in_ch = int(first_stage.config.in_channels)
        last_conv = [m for m in self.encoder.modules() if isinstance(m, nn.Conv2d)][-1]
        self._features: list[torch.Tensor] = []
        last_conv.register_forward_pre_hook(self._keep_features)  # a bound method survives deepcopy
        self.variance_head = VarianceHead(latent_channels + last_conv.in_channels + in_ch * downsample ** 2,
                                          head_channels, init_sigma2, head_bands)
        del first_stage

    def _keep_features(self, _module, args) -> None:
        """The encoder's last hidden features (the input of its final convolution), for the head."""
        self._features.append(args[0])

    @classmethod
    def from_autoencoder(cls, ae, head_channels: int = 64, init_sigma2: float = 0.03,
                         head_bands: int = 0) -> "SeverityEncoder":
        """A severity encoder whose mean head equals `ae.encode` (E0 · scale) before training.

        `ae` is a `pipeline.models.latent.Autoencoder`; its encoder (and quant_conv) weights are copied
        and later fine-tuned as a whole; the variance head is new.
        """
        cfg = {k: v for k, v in dict(ae.model.config).items() if not k.startswith("_")}
        model = cls(autoencoder_class=type(ae.model).__name__, autoencoder_config=cfg, downsample=ae.downsample,
                    latent_channels=ae.latent_channels, scale=float(ae.scale), head_channels=head_channels,
                    init_sigma2=init_sigma2, head_bands=head_bands)
        ref = next(ae.model.parameters())
        nn.Module.to(model, device=ref.device, dtype=ref.dtype)  # diffusers .to(dtype) warns spuriously
        model.encoder.load_state_dict(ae.model.encoder.state_dict(), strict=True)
        if model.quant_conv is not None:
            model.quant_conv.load_state_dict(ae.model.quant_conv.state_dict(), strict=True)
        return model

    @property
    def scale(self) -> float:
        return float(self.config.scale)

    def head_inputs(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ in scaled latent space, the variance head's detached input maps) for y in [−1,1]."""
        self._features.clear()
        h = self.encoder(y)
        features = self._features.pop()
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean = h if self.kind == "vq" else h.chunk(2, dim=1)[0]
        z_hat = self.scale * mean
        folded = F.pixel_unshuffle(y, int(self.config.downsample))
        return z_hat, torch.cat([z_hat, features, folded], dim=1).detach()

    def heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ in scaled latent space, log σ̂² broadcast to ẑ's shape) for y in [−1,1]."""
        z_hat, inputs = self.head_inputs(y)
        log_s2 = self.variance_head(inputs, y.detach())
        return z_hat, log_s2.view(-1, 1, 1, 1).expand_as(z_hat)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ (B,C,h,w), σ̂² (B,)), σ̂² > 0 by construction."""
        z_hat, log_var = self.heads(y)
        return z_hat, log_var.exp().flatten(1).mean(dim=1)


def severity_loss(
    z_hat: torch.Tensor,
    log_var: torch.Tensor,
    z0: torch.Tensor,
    *,
    lambda_sigma: float = 1.0,
    lambda_img: float = 0.0,
    x: torch.Tensor | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    variance_loss: str = "log",
    couple_variance: bool = False,
    pair_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The severity loss, batch-averaged; returns {total, latent, variance, image, sigma2}.

    latent   = mean over entries of (ẑ − z0)²;
    variance, with σ̂² = mean exp(log_var) and σ̄² the unbiased variance of e = ẑ − z0 per image
      (a fixed target unless `couple_variance`, the reference's variant that also pushes ẑ's
      error statistics toward σ̂²):
        "log": (log σ̂² − log σ̄²)², relative error, so mild and severe damage weigh alike
               (the start step depends on log σ̂² through the SNR grid);
        "mse": (σ̄² − σ̂²)², the reference's term, dominated by the most damaged images;
        "nll": per-element Gaussian negative log-likelihood of e under exp(log_var);
    image    = mean over pixels of (decode(ẑ) − x)², weighted by `lambda_img`;
    pair     = with `pair_weight` > 0, rows 2k and 2k+1 are one crop at two severities and
      ((log σ̂²_a − log σ̂²_b) − (log σ̄²_a − log σ̄²_b))² is added to both rows: the crop's
      content cancels in the difference, so this term teaches what damage alone does to
      the error — the within-image ordering the pooled term learns only slowly.
    `z0` should be the frozen autoencoder's `encode(x)`; it is detached here.
    """
    if variance_loss not in VARIANCE_LOSSES:
        raise ValueError(f"variance_loss must be one of {VARIANCE_LOSSES}, got {variance_loss!r}")
    if log_var.shape != z_hat.shape:
        raise ValueError(f"log_var must have ẑ's shape {tuple(z_hat.shape)}, got {tuple(log_var.shape)}")
    z0 = z0.detach()
    e = (z_hat - z0).flatten(1)
    latent = e.pow(2).mean(dim=1)
    target = e.var(dim=1, unbiased=True)
    if not couple_variance:
        target = target.detach()
    lv = log_var.flatten(1).to(e.dtype)
    sigma2_hat = lv.exp().mean(dim=1)
    if variance_loss == "log":
        variance = (sigma2_hat.log() - target.clamp_min(1e-10).log()).pow(2)
    elif variance_loss == "mse":
        variance = (target - sigma2_hat).pow(2)
    else:
        err2 = e.pow(2) if couple_variance else e.detach().pow(2)
        variance = 0.5 * (err2 * (-lv).exp() + lv).mean(dim=1)
    if lambda_img:
        if x is None or decode is None:
            raise ValueError("lambda_img > 0 needs the clean image x and a decode function")
        image = (decode(z_hat) - x).pow(2).flatten(1).mean(dim=1)
    else:
        image = torch.zeros_like(latent)
    pair = torch.zeros_like(latent)
    if pair_weight:
        if len(latent) % 2:
            raise ValueError(f"pair_weight > 0 needs same-crop pairs in consecutive rows, got {len(latent)} rows")
        d = sigma2_hat.log() - target.clamp_min(1e-10).log()
        pair = (d[0::2] - d[1::2]).pow(2).repeat_interleave(2)
    total = latent + lambda_sigma * (variance + pair_weight * pair) + lambda_img * image
    return {"total": total.mean(), "latent": latent.mean(), "variance": variance.mean(),
            "image": image.mean(), "pair": pair.mean().detach(), "sigma2": sigma2_hat.mean().detach()}
