"""The severity encoder S_θ(y) = (ẑ, σ̂²) and its training loss (flash-spec §2).

Why: the predicted latent-error variance σ̂² picks the reverse-diffusion step a sample
starts from (`Sampler.start_index`), so easy images run few denoiser steps. The encoder is
a fine-tuned copy of the autoencoder's encoder + quant_conv (its mean head starts as E0),
plus a variance head:
  * VQ: a new 1×1 conv `std_conv` (C→C, bias) on ẑ itself gives a std map s;
  * KL: quant_conv's second half (the log-variance head at init) is read as a std map s.
σ̂² = mean over C·H·W of s², one scalar per image. ẑ is in the *scaled* diffusion latent
space (scale · E0), so σ̂² is measured in the units the sampler's SNR grid uses.

Cost: one encoder forward per image (the same network size as the autoencoder's encoder,
plus a 1×1 conv); no decoder and no denoiser calls.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Encoder
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class SeverityEncoder(ModelMixin, ConfigMixin):
    """Mean head (a copy of E0, times `scale`) and a per-image variance head σ̂²."""

    @register_to_config
    def __init__(
        self,
        kind: str = "vq",
        in_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        latent_channels: int = 3,
        vq_embed_dim: int | None = None,
        use_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        scale: float = 1.0,
    ):
        super().__init__()
        if kind not in ("vq", "kl"):
            raise ValueError(f"kind must be 'vq' or 'kl', got {kind!r}")
        self.encoder = Encoder(
            in_channels=in_channels, out_channels=latent_channels, down_block_types=tuple(down_block_types),
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, act_fn=act_fn, double_z=(kind == "kl"),
            mid_block_add_attention=mid_block_add_attention,
        )
        if kind == "vq":
            dim = vq_embed_dim or latent_channels
            self.quant_conv = nn.Conv2d(latent_channels, dim, 1)
            self.std_conv = nn.Conv2d(dim, dim, 1)
        else:
            c2 = 2 * latent_channels
            self.quant_conv = nn.Conv2d(c2, c2, 1) if use_quant_conv else None
            self.std_conv = None

    @classmethod
    def from_autoencoder(cls, ae) -> "SeverityEncoder":
        """A severity encoder whose mean head equals `ae.encode` (E0 · scale) before training.

        `ae` is a `pipeline.latent.Autoencoder`; its encoder and quant_conv weights are copied
        (and later fine-tuned as a whole). The VQ `std_conv` starts from PyTorch's default init.
        """
        cfg = ae.model.config
        model = cls(
            kind=ae.kind, in_channels=cfg.in_channels, down_block_types=tuple(cfg.down_block_types),
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups, act_fn=cfg.act_fn, latent_channels=cfg.latent_channels,
            vq_embed_dim=cfg.get("vq_embed_dim"), use_quant_conv=bool(cfg.get("use_quant_conv", True)),
            mid_block_add_attention=bool(cfg.get("mid_block_add_attention", True)), scale=float(ae.scale),
        )
        ref = next(ae.model.parameters())
        nn.Module.to(model, device=ref.device, dtype=ref.dtype)  # diffusers .to(dtype) warns spuriously
        model.encoder.load_state_dict(ae.model.encoder.state_dict(), strict=True)
        if model.quant_conv is not None:
            model.quant_conv.load_state_dict(ae.model.quant_conv.state_dict(), strict=True)
        return model

    @property
    def scale(self) -> float:
        return float(self.config.scale)

    def heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ in scaled latent space, per-element std map s) for y in [−1,1]."""
        h = self.encoder(y)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        if self.config.kind == "vq":
            z_hat = self.scale * h
            return z_hat, self.std_conv(z_hat)
        mean, s = h.chunk(2, dim=1)
        return self.scale * mean, s

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ẑ (B,C,h,w), σ̂² (B,)) with σ̂² = mean of s² over C·H·W (≥ 0 by construction)."""
        z_hat, s = self.heads(y)
        return z_hat, s.pow(2).flatten(1).mean(dim=1)


def severity_loss(
    z_hat: torch.Tensor,
    sigma2_hat: torch.Tensor,
    z0: torch.Tensor,
    *,
    lambda_sigma: float = 1.0,
    lambda_img: float = 0.0,
    x: torch.Tensor | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    couple_variance: bool = False,
) -> dict[str, torch.Tensor]:
    """flash-spec §2.2 loss, batch-averaged; returns {total, latent, variance, image}.

    latent   = mean over entries of (ẑ − z0)²;
    variance = (σ̄² − σ̂²)², σ̄² the unbiased sample variance of e = ẑ − z0 per image.
      σ̄² is a fixed target (stop-gradient) by default, so the variance term trains only the
      variance head; `couple_variance=True` is the reference's variant where it also pushes
      ẑ's error statistics toward σ̂² (design.md, "quirks");
    image    = mean over pixels of (decode(ẑ) − x)², a per-image mean weighted by
      `lambda_img` (the reference adds a batch *sum*, which scales with batch size).
    `z0` should be the frozen autoencoder's `encode(x)`; it is detached here.
    """
    z0 = z0.detach()
    if sigma2_hat.dim() != 1 or sigma2_hat.shape[0] != z_hat.shape[0]:
        raise ValueError(f"sigma2_hat must have shape (B,), got {tuple(sigma2_hat.shape)}")
    e = (z_hat - z0).flatten(1)
    latent = e.pow(2).mean(dim=1)
    target = e.var(dim=1, unbiased=True)
    if not couple_variance:
        target = target.detach()
    variance = (target - sigma2_hat.to(target.dtype)).pow(2)
    if lambda_img:
        if x is None or decode is None:
            raise ValueError("lambda_img > 0 needs the clean image x and a decode function")
        image = (decode(z_hat) - x).pow(2).flatten(1).mean(dim=1)
    else:
        image = torch.zeros_like(latent)
    total = latent + lambda_sigma * variance + lambda_img * image
    return {"total": total.mean(), "latent": latent.mean(), "variance": variance.mean(),
            "image": image.mean()}
