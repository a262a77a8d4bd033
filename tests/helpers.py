"""Test helpers shared by the whole suite (pytest fixtures live in conftest.py).

Tiny random diffusers models for fast CPU tests: the autoencoders are f=4 (three blocks),
3 latent channels; images are `image_size` square (16 by default, or 32), latents
image_size/4. Weights are random but deterministic in `seed`, drawn without touching the
global RNG state. And a tiny but real restore setup for engine tests: those models saved
as safetensors, severity encoders per operator family, and a small WebDataset archive.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from pipeline.execution.config import load_config
from pipeline.io.shards import write_shard
from pipeline.models.latent import Autoencoder, LatentDiffusion
from pipeline.models.model_store import save_latent_diffusion, save_model
from pipeline.execution.blind_parameters import BY_MODEL as BLIND_BY_MODEL
from pipeline.models.parameter_estimator import ESTIMATOR_OF, ParameterEstimator
from pipeline.models.severity import SeverityEncoder
from pipeline.operators import OPERATORS
from pipeline.sampling.schedules import NoiseSchedule
from pipeline.sampling.seeding import generators

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


IMAGE_SIZE = 16
FAMILY_PARAMS = {name: cls.example_params(IMAGE_SIZE, IMAGE_SIZE)[0] for name, cls in OPERATORS.items()}  # fits the 16 px models


def model_set(root: Path) -> Path:
    """Tiny random models (16 px, T = 50) in the layout train-* writes, with model cards."""
    ldm = tiny_latent_diffusion("vq", dtype=torch.float32, num_timesteps=50, image_size=IMAGE_SIZE)
    save_latent_diffusion(ldm, str(root / "autoencoder"), str(root / "ldm"))
    for i, fam in enumerate(FAMILY_PARAMS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + i)
            enc = SeverityEncoder.from_autoencoder(ldm.autoencoder).float()
        save_model(enc, str(root / f"severity-{fam}"),
                   extra={"role": "severity", "operator": fam, "operator_params": FAMILY_PARAMS[fam]})
    for fam in sorted({ESTIMATOR_OF.get(f, f) for f in BLIND_BY_MODEL}):
        est = _seeded(200, lambda: ParameterEstimator(channels=4, hidden=8))
        save_model(est, str(root / f"estimator-{fam}"), extra={"role": "estimator", "operator": fam})
    for name in ("autoencoder", "ldm", *(f"severity-{f}" for f in FAMILY_PARAMS)):
        (root / name / "MODEL_CARD.md").write_text(f"# flash-restore {name} model\n\n- steps: 1\n")
    return root


def build_tiny_models(root: Path) -> dict:
    """The tiny model set under `root`, and the config overrides that point a restore job at it."""
    model_set(root)
    overrides = [f"models.autoencoder={root / 'autoencoder'}", f"models.denoiser={root / 'ldm'}"]
    overrides += [f"models.severity.{fam}={root / f'severity-{fam}'}" for fam in FAMILY_PARAMS]
    overrides += [f"models.estimators.{fam}={root / f'estimator-{fam}'}"
                  for fam in sorted({ESTIMATOR_OF.get(f, f) for f in BLIND_BY_MODEL})]
    # random models: the shipped prior's tuned table applies where it has an entry, the built-ins elsewhere
    # (a family registered after the table was tuned, e.g. varying_blur)
    overrides.append("solver.untuned=defaults")
    return {"overrides": overrides}


def tiny_clean_images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0,1] (upsampled noise), so blur and inpainting matter."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


def archive_samples(n: int, families=tuple(OPERATORS), seed: int = 0,
                    prefix: str = "s") -> list[dict]:
    """n degraded samples with references and per-sample operator json, severities spread over [0,1]; the
    degraded member is what `degrade` writes for the family (a PNG; libjpeg's .jpg; a small copy)."""
    clean = tiny_clean_images(n, seed)
    samples = []
    for i in range(n):
        fam = families[i % len(families)]
        key = f"{prefix}{i:04d}"
        params = OPERATORS[fam].for_image(OPERATORS[fam].params_for(round((i * 0.37) % 1.0, 3), 0.05, 1000 + i,
                                                                    **FAMILY_PARAMS[fam]), IMAGE_SIZE, IMAGE_SIZE)
        op = OPERATORS[fam]([params], [key])
        (ext, data), = op.archive_files(clean[i:i + 1], generators(seed, [key], "degradation"))  # what degrade writes
        samples.append({"__key__": key, ext: data, "clean.png": clean[i], "json": params})
    return samples


def write_archive(root: Path, n: int = 12, shards: int = 2, **kw) -> str:
    """Write n samples over `shards` tar files under root/; return the folder URL."""
    root.mkdir(parents=True, exist_ok=True)
    samples = archive_samples(n, **kw)
    per = (n + shards - 1) // shards
    for s in range(shards):
        write_shard(str(root / f"shard-{s:03d}.tar"), samples[s * per:(s + 1) * per])
    return str(root)


def tiny_config(models: dict, *extra: str):
    return load_config(None, models["overrides"] + ["execution.engine=local", "execution.batch_size=4",
                                                    "execution.bucket_width=5", *extra])


def engine_setup(root: Path) -> tuple[Path, dict, str]:
    """Tiny models and a 9-sample, 2-shard archive under root: what the engine tests share."""
    return root, build_tiny_models(root / "models"), write_archive(root / "archive", n=9, shards=2)


def output_images(out: str) -> dict:
    """key → restored image (float64 array) of every committed part of an output (local or s3://)."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from pipeline.io.outputs import OutputStore

    store = OutputStore(out)
    found = {}
    for info in store.read_manifest()["parts"].values():
        with store.fs.open(store.path(info["images"]), "rb") as fh, tarfile.open(fileobj=fh) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    found[m.name[:-4]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())), np.float64)
    return found
