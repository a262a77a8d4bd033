"""The latent diffusion prior: an autoencoder (E0, D0) and a denoiser on scaled latents.

Diffusion latents are `scale · E0(x)` with x ∈ [−1,1]; `scale` makes them unit-variance
(LDM's scale_factor; 1.0 for the CompVis checkpoints). For a VQ first stage E0 is the
pre-quantization latent `quant_conv(Encoder(x))` and D0 quantizes with a straight-through
gradient; for a KL first stage E0 is the posterior mode.

The solvers consume ε. A UNet trained to predict v = √ᾱ·ε − √(1−ᾱ)·z0 (`v_prediction`)
is converted: ε = √ᾱ·v + √(1−ᾱ)·z_t. Why offer v: with ε-prediction the clean-latent
estimate (z_t − √(1−ᾱ)·ε̂)/√ᾱ multiplies the ε error by √((1−ᾱ)/ᾱ), some 85× at the end
of the LDM schedule (docs/model-design.md); with v it stays bounded.
"""
from __future__ import annotations

from contextlib import contextmanager

from dataclasses import dataclass
from typing import Callable

import diffusers
import torch
from torch import nn

from pipeline.models.space_to_depth_autoencoder import SpaceToDepthAutoencoder
from pipeline.sampling.schedules import NoiseSchedule


# First stages with AutoencoderKL's interface (`encode(x).latent_dist`, `decode(z).sample`).
KL_CLASSES = ("AutoencoderKL", "SpaceToDepthAutoencoder")
AUTOENCODER_CLASSES = ("VQModel",) + KL_CLASSES


def autoencoder_class(name: str) -> type:
    """The first-stage class a config names; anything but the three autoencoders is refused."""
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(f"autoencoder_class must be one of {AUTOENCODER_CLASSES}, got {name!r}")
    return SpaceToDepthAutoencoder if name == "SpaceToDepthAutoencoder" else getattr(diffusers, name)


class Autoencoder(nn.Module):
    """A diffusers `VQModel`, `AutoencoderKL` or our `SpaceToDepthAutoencoder` seen as E0/D0 on scaled latents."""

    def __init__(self, model: nn.Module, scale: float = 1.0):
        super().__init__()
        self.model = model
        self.scale = float(scale)
        kind = type(model).__name__
        if kind == "VQModel":
            self.kind = "vq"
        elif kind in KL_CLASSES:
            self.kind = "kl"
        else:
            raise ValueError(f"autoencoder must be one of {('VQModel',) + KL_CLASSES}, got {kind}")

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels if self.kind == "kl" else self.model.config.vq_embed_dim
                   or self.model.config.latent_channels)

    @property
    def downsample(self) -> int:
        own = getattr(self.model, "downsample_factor", None)
        return int(own) if own else 2 ** (len(self.model.config.block_out_channels) - 1)

    def encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """E0(x) without the diffusion scale."""
        if self.kind == "vq":
            return self.model.encode(x).latents
        return self.model.encode(x).latent_dist.mode()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.encode_unscaled(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D0(z / scale) in [−1,1] (not clipped, as in the reference)."""
        return self.model.decode(z / self.scale).sample


PREDICTIONS = ("epsilon", "v_prediction")


@dataclass
class LatentDiffusion:
    """Autoencoder + UNet2DModel (ε- or v-prediction) + the schedule it was trained with."""

    autoencoder: Autoencoder
    unet: nn.Module
    schedule: NoiseSchedule
    prediction: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    def eps(self, z: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """ε_θ(z_t, t) at per-sample DDPM timesteps (converted from v for a v-prediction UNet)."""
        t = timesteps.to(z.device)
        out = self.unet(z, t).sample
        if self.prediction == "epsilon":
            return out
        a = self.schedule.alpha_bar(t, z)
        return a.sqrt() * out + (1.0 - a).sqrt() * z

    def to(self, device=None, dtype=None) -> "LatentDiffusion":
        self.autoencoder.to(device=device, dtype=dtype)
        self.unet.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "LatentDiffusion":
        self.autoencoder.eval()
        self.unet.eval()
        for p in list(self.autoencoder.parameters()) + list(self.unet.parameters()):
            p.requires_grad_(False)
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (int(cfg.in_channels), int(size), int(size))


@contextmanager
def coders_replaced(ae: Autoencoder, encode: Callable, decode: Callable):
    """While open, `ae.encode` / `ae.decode` are the given functions (they may call the originals,
    bound before entering): a solver that decodes a canvas then runs them, unchanged."""
    if "encode" in ae.__dict__ or "decode" in ae.__dict__:
        raise RuntimeError("the autoencoder's coders are already replaced (nested canvases?)")
    ae.encode, ae.decode = encode, decode
    try:
        yield ae
    finally:
        del ae.encode, ae.decode
