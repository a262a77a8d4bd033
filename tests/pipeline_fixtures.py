"""A tiny but real restore setup for engine tests: random diffusers models saved as
safetensors, severity encoders per operator family, and a small WebDataset archive."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.execution.config import load_config
from pipeline.models.model_store import save_latent_diffusion, save_model
from pipeline.operators import OPERATORS, measure
from pipeline.sampling.seeding import generators
from pipeline.models.severity import SeverityEncoder
from pipeline.io.shards import write_shard
from tests.factories import tiny_latent_diffusion

IMAGE_SIZE = 16
FAMILY_OVERRIDES = {name: cls.example_params(IMAGE_SIZE, IMAGE_SIZE)[0] for name, cls in OPERATORS.items()}


def build_tiny_models(root: Path) -> dict:
    """Save a tiny LDM (T=50) and one severity encoder per family; return the config overrides."""
    ldm = tiny_latent_diffusion("vq", dtype=torch.float32, num_timesteps=50, image_size=IMAGE_SIZE)
    ae_url, unet_url = str(root / "autoencoder"), str(root / "ldm")
    save_latent_diffusion(ldm, ae_url, unet_url)
    overrides = [f"models.autoencoder={ae_url}", f"models.denoiser={unet_url}"]
    for i, fam in enumerate(OPERATORS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + i)
            enc = SeverityEncoder.from_autoencoder(ldm.autoencoder).float()
        url = str(root / f"severity-{fam}")
        save_model(enc, url)
        overrides.append(f"models.severity.{fam}={url}")
    return {"overrides": overrides}


def tiny_clean_images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0,1] (upsampled noise), so blur and inpainting matter."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


def archive_samples(n: int, families=tuple(OPERATORS), seed: int = 0,
                    prefix: str = "s") -> list[dict]:
    """n degraded samples with references and per-sample operator json, severities spread over [0,1]."""
    clean = tiny_clean_images(n, seed)
    samples = []
    for i in range(n):
        fam = families[i % len(families)]
        key = f"{prefix}{i:04d}"
        params = OPERATORS[fam].params_for(round((i * 0.37) % 1.0, 3), 0.05, 1000 + i, **FAMILY_OVERRIDES[fam])
        op = OPERATORS[fam]([params], [key])
        y01 = measure(op, clean[i:i + 1], generators(seed, [key], "degradation"))[0].clamp(0, 1)
        samples.append({"__key__": key, "png": y01, "clean.png": clean[i], "json": params})
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
