"""Models as diffusers config + safetensors folders at any fsspec URL (local, file://, memory://, s3://).

Why this module exists: the design forbids pickled checkpoints, so every load goes through
a validated safetensors file, a class allow-list and an explicit key/shape check (a
mismatch must be an error, never a silently random-initialised layer). Fingerprints give
jobs a content hash of every model to write into each output row.

Folder layout: `config.json` (diffusers config with `_class_name`),
`diffusion_pytorch_model.safetensors`, and optionally `flash_model.json` (our metadata:
kind, latent scale, schedule, fingerprints of the models this one depends on).
Diffusers pipeline folders (unet/ + vqvae/|vae/ + scheduler/) are handled by
`pipeline_folder`, component by component through the same checks (see `load_latent_diffusion`).

This is the one public module for loading: one folder's checks live in `model_files`, the
pipeline layout in `pipeline_folder`, and both sit below it.
"""
from __future__ import annotations

import json
import tempfile
import warnings

import torch

from pipeline.models import pipeline_folder as pf
from pipeline.models.latent import Autoencoder, LatentDiffusion
from pipeline.models.model_files import (CONFIG_NAME, META_NAME, WEIGHTS_NAME, allowed_class, build, cast, download,
                                         file_system, folder_fingerprint, folder_fingerprint_local, load_meta,
                                         load_model, model_fingerprint, save_model)
from pipeline.sampling.schedules import NoiseSchedule


def fingerprint(url: str) -> str:
    """sha256 (16 hex) over the canonical config and every tensor's name, dtype, shape and bytes.

    A pipeline folder hashes as a whole (autoencoder, UNet and scheduler config).
    """
    if pf.is_pipeline_folder(url):
        return pf.pipeline_fingerprint(url)
    return folder_fingerprint(url)


# ---------------------------------------------------------------- latent diffusion

def _schedule_meta(schedule: NoiseSchedule) -> dict:
    """Describe a schedule compactly when it is the LDM linear one, else by its ᾱ values."""
    T = schedule.num_timesteps
    for start, end in ((0.0015, 0.0195), (0.00085, 0.012), (0.0001, 0.02)):
        ref = NoiseSchedule.ldm_linear(T, start, end).alphas_cumprod
        if torch.allclose(ref, schedule.alphas_cumprod.cpu().double(), rtol=1e-10, atol=1e-12):
            return {"type": "ldm_linear", "T": T, "beta_start": start, "beta_end": end}
    return {"type": "alphas_cumprod", "T": T, "values": schedule.alphas_cumprod.double().tolist()}


def _schedule_from_meta(meta: dict | None) -> NoiseSchedule:
    if not meta:
        return NoiseSchedule.ldm_linear()
    if meta["type"] == "ldm_linear":
        return NoiseSchedule.ldm_linear(int(meta["T"]), float(meta["beta_start"]), float(meta["beta_end"]))
    if meta["type"] == "alphas_cumprod":
        return NoiseSchedule(torch.tensor(meta["values"], dtype=torch.float64))
    raise ValueError(f"unknown schedule type {meta['type']!r}")


def save_latent_diffusion(ldm: LatentDiffusion, autoencoder_url: str, unet_url: str) -> dict:
    """Save the autoencoder and the UNet; the UNet's metadata records scale, schedule and AE fingerprint."""
    ae = ldm.autoencoder
    ae_fp = save_model(ae.model, autoencoder_url, extra={"role": "autoencoder", "kind": ae.kind, "latent_scale": ae.scale})
    unet_fp = save_model(ldm.unet, unet_url, extra={
        "role": "denoiser", "latent_scale": ae.scale, "schedule": _schedule_meta(ldm.schedule),
        "prediction_type": ldm.prediction,
        "autoencoder_fingerprint": ae_fp, "autoencoder_kind": ae.kind})
    return {"autoencoder": ae_fp, "unet": unet_fp}


def load_latent_diffusion(autoencoder_url: str, unet_url: str, device="cpu", dtype=None,
                          on_mismatch: str = "error") -> LatentDiffusion:
    """Load an LDM saved by `save_latent_diffusion` (or plain diffusers folders: scale 1, LDM schedule).

    The UNet was trained on one autoencoder's latents; a different autoencoder gives garbage,
    so a fingerprint mismatch is an error (`on_mismatch="warn"` downgrades it).

    Pipeline folders: wherever an autoencoder URL is expected, a pipeline folder means its
    vqvae/ (or vae/). When `unet_url` is a pipeline folder, the whole prior comes from it
    (UNet, ᾱ of its scheduler, autoencoder and latent scale), and `autoencoder_url` must name
    the same autoencoder: the same folder, or one with the same fingerprint (e.g. PIPELINE/vqvae).
    """
    if on_mismatch not in ("error", "warn"):
        raise ValueError("on_mismatch must be 'error' or 'warn'")
    if pf.is_pipeline_folder(unet_url):
        return _load_pipeline_prior(autoencoder_url, unet_url, device, dtype, on_mismatch)
    ae_src = pf.resolve_autoencoder_url(autoencoder_url)
    with tempfile.TemporaryDirectory(prefix="flash-ldm-") as tmp:
        folder = download(ae_src, tmp)
        ae_fp = folder_fingerprint_local(folder, autoencoder_url)
        ae_model, ae_meta = build(folder, autoencoder_url)
    if ae_src != autoencoder_url:  # a pipeline's autoencoder: compare as loaded (see autoencoder_fingerprint)
        ae_fp = model_fingerprint(ae_model)
    unet, meta = load_model(unet_url, device=device, dtype=dtype, return_meta=True)
    if type(unet).__name__ != "UNet2DModel":
        raise ValueError(f"{unet_url} holds a {type(unet).__name__}, not a UNet2DModel")
    want = meta.get("autoencoder_fingerprint")
    if want is not None and want != ae_fp:
        msg = (f"the UNet at {unet_url} was saved with autoencoder {want}, but {autoencoder_url} "
               f"has fingerprint {ae_fp}: the latents would not match")
        if on_mismatch == "error":
            raise ValueError(msg)
        warnings.warn(msg)
    if not meta:
        warnings.warn(f"{unet_url} has no {META_NAME}; assuming latent scale 1.0 and the LDM linear schedule")
    scale = float(meta.get("latent_scale", ae_meta.get("latent_scale", 1.0)))
    ae = Autoencoder(cast(ae_model, device, dtype), scale)
    return LatentDiffusion(ae, unet, _schedule_from_meta(meta.get("schedule")),
                           meta.get("prediction_type", "epsilon")).eval()


def _load_pipeline_prior(autoencoder_url: str, pipe_url: str, device, dtype, on_mismatch: str) -> LatentDiffusion:
    """`load_latent_diffusion` for a pipeline folder; with "warn" a mismatched autoencoder is used at the pipeline's scale."""
    ae, pipe_fp, _ = pf.load_pipeline_autoencoder(pipe_url, device, dtype)
    same = {pipe_url.rstrip("/"), pf.resolve_autoencoder_url(pipe_url).rstrip("/")}
    if autoencoder_url and autoencoder_url.rstrip("/") not in same:
        given = pf.autoencoder_fingerprint(autoencoder_url)
        if given != pipe_fp:
            msg = (f"models.denoiser {pipe_url} is a pipeline folder whose autoencoder has fingerprint {pipe_fp}, "
                   f"but models.autoencoder {autoencoder_url} has {given}: set models.autoencoder to the same folder")
            if on_mismatch == "error":
                raise ValueError(msg)
            warnings.warn(msg)
            ae = Autoencoder(load_model(pf.resolve_autoencoder_url(autoencoder_url), device=device, dtype=dtype), ae.scale)
    return pf.load_pipeline_folder(pipe_url, device, dtype, autoencoder=ae)


def load_pipeline_folder(url: str, device="cpu", dtype=None) -> LatentDiffusion:
    """The LatentDiffusion of a diffusers pipeline folder (see `pipeline.models.pipeline_folder`)."""
    return pf.load_pipeline_folder(url, device, dtype)


def model_image_size(autoencoder_url: str) -> int | None:
    """The image side the autoencoder was built for (its config's `sample_size`), or None."""
    fs, path = file_system(pf.resolve_autoencoder_url(autoencoder_url))
    try:
        with fs.open(f"{path}/{CONFIG_NAME}", "r") as f:
            size = json.load(f).get("sample_size")
    except (OSError, ValueError):
        return None
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) if isinstance(size, int) and size > 0 else None



__all__ = ["CONFIG_NAME", "META_NAME", "WEIGHTS_NAME", "allowed_class", "fingerprint", "load_latent_diffusion", "load_meta", "load_model",
           "load_pipeline_folder", "model_fingerprint", "model_image_size", "save_latent_diffusion", "save_model"]
