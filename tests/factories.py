"""Tiny random diffusers models for fast CPU tests (shared by the whole suite).

The autoencoders are f=4 (three blocks), 3 latent channels; images are `image_size`
square (16 by default, or 32), latents image_size/4. Weights are random but deterministic
in `seed`, drawn without touching the global RNG state.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from pipeline.models.latent import Autoencoder, LatentDiffusion
from pipeline.operators import OPERATORS
from pipeline.sampling.schedules import NoiseSchedule

BLOCKS = (8, 16, 16)
GROUPS = 4


def _cast(model, dtype):
    """nn.Module.to: diffusers' own .to(dtype) logs a spurious fp32-modules warning."""
    return torch.nn.Module.to(model, dtype=dtype).eval()


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_vq(seed: int = 0, image_size: int = 16, dtype=torch.float32) -> VQModel:
    """A random VQModel, f=4, 3 latent channels, 32 codebook entries."""
    return _cast(_seeded(seed, lambda: VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=BLOCKS, layers_per_block=1,
        latent_channels=3, sample_size=image_size, num_vq_embeddings=32, norm_num_groups=GROUPS,
        scaling_factor=1.0,
    )), dtype)


def tiny_kl(seed: int = 0, image_size: int = 16, dtype=torch.float32) -> AutoencoderKL:
    """A random AutoencoderKL, f=4, 3 latent channels (double_z encoder + quant_conv)."""
    return _cast(_seeded(seed, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=BLOCKS, layers_per_block=1,
        latent_channels=3, norm_num_groups=GROUPS, sample_size=image_size, scaling_factor=1.0,
    )), dtype)


def tiny_s2d(seed: int = 0, image_size: int = 16, dtype=torch.float32):
    """A random SpaceToDepthAutoencoder, f=4, 3 latent channels (the shipped design, tiny)."""
    from pipeline.models.space_to_depth_autoencoder import SpaceToDepthAutoencoder

    return _cast(_seeded(seed, lambda: SpaceToDepthAutoencoder(
        block_out_channels=(8, 16), layers_per_block=(1, 1), latent_channels=3, norm_num_groups=GROUPS,
        sample_size=image_size)), dtype)


def tiny_unet(seed: int = 0, latent_size: int = 4, channels: int = 3, dtype=torch.float32) -> UNet2DModel:
    """A random ε-UNet on (channels, latent_size, latent_size) latents, with one attention block."""
    return _cast(_seeded(seed, lambda: UNet2DModel(
        sample_size=latent_size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=GROUPS, attention_head_dim=8,
    )), dtype)


def tiny_autoencoder(kind: str = "vq", seed: int = 0, image_size: int = 16, scale: float = 1.0,
                     dtype=torch.float64) -> Autoencoder:
    builders = {"vq": tiny_vq, "kl": tiny_kl, "s2d": tiny_s2d}
    if kind not in builders:
        raise ValueError(f"kind must be one of {sorted(builders)}, got {kind!r}")
    model = builders[kind](seed, image_size, dtype)
    return Autoencoder(model, scale)


def tiny_latent_diffusion(kind: str = "vq", dtype=torch.float64, seed: int = 0, image_size: int = 16,
                          scale: float = 1.0, num_timesteps: int = 1000) -> LatentDiffusion:
    """Autoencoder + UNet + the LDM linear schedule, all tiny and random."""
    ae = tiny_autoencoder(kind, seed, image_size, scale, dtype)
    unet = tiny_unet(seed + 1, image_size // 4, ae.latent_channels, dtype)
    return LatentDiffusion(ae, unet, NoiseSchedule.ldm_linear(num_timesteps))


def random_images(batch: int = 2, image_size: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Images in [−1,1], (B, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, image_size, image_size, generator=g, dtype=dtype) * 2 - 1


FAMILY_PARAMS = {name: cls.example_params(16, 16)[0] for name, cls in OPERATORS.items()}  # fits model_set's 16 px


def model_set(root):
    """Tiny random models (16 px, T = 50) in the layout train-* writes, with model cards."""
    from pipeline.models.model_store import save_latent_diffusion, save_model
    from pipeline.models.severity import SeverityEncoder

    ldm = tiny_latent_diffusion("vq", dtype=torch.float32, num_timesteps=50, image_size=16)
    save_latent_diffusion(ldm, str(root / "autoencoder"), str(root / "ldm"))
    for i, fam in enumerate(FAMILY_PARAMS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + i)
            enc = SeverityEncoder.from_autoencoder(ldm.autoencoder).float()
        save_model(enc, str(root / f"severity-{fam}"),
                   extra={"role": "severity", "operator": fam, "operator_params": FAMILY_PARAMS[fam]})
    for name in ("autoencoder", "ldm", *(f"severity-{f}" for f in FAMILY_PARAMS)):
        (root / name / "MODEL_CARD.md").write_text(f"# flash-restore {name} model\n\n- steps: 1\n")
    return root
