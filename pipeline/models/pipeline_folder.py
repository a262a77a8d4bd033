"""Diffusers pipeline folders ("bring your own LDM"), e.g. `CompVis/ldm-celebahq-256` as it ships.

Layout: `unet/` (UNet2DModel), `vqvae/` (VQModel) or `vae/` (AutoencoderKL), each a normal
model folder (config.json + safetensors), and `scheduler/scheduler_config.json`; a
`model_index.json` is optional. Why a separate module: the model store's guarantees (no
pickle, class allow-list, key/shape check) must hold for every component, so each one is
loaded through `model_files.build`; this module only adds the folder layout, the latent
scale rule and the schedule. Scheduler configs are read as JSON and instantiated with an
allow-listed diffusers class only to compute ᾱ; sampling uses our own samplers.

Latent scale (why not simply `config.scaling_factor`): diffusers fills a missing VQModel
`scaling_factor` with its SD default 0.18215, which the CompVis VQ configs never set (their
latents are unscaled; diffusers issue #6725). So:
* `vqvae/`: 1.0, unless its config.json explicitly sets another value than 1.0 or 0.18215;
* `vae/`: the config's `scaling_factor` as diffusers resolves it (the SD convention);
* a `flash_model.json` with `latent_scale` in the autoencoder folder overrides both.
"""
from __future__ import annotations

import hashlib
import json
import tempfile

import diffusers
import fsspec

from pipeline.models.latent import AUTOENCODER_CLASSES, PREDICTIONS, Autoencoder, LatentDiffusion
from pipeline.models.model_files import (build, cast, download, folder_fingerprint, load_model, local_files,
                                         model_fingerprint)
from pipeline.sampling.schedules import NoiseSchedule

INDEX_NAME = "model_index.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
AUTOENCODER_DIRS = ("vqvae", "vae")
ALLOWED_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
                      "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
                      "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
DIFFUSERS_DEFAULT_SCALE = 0.18215


def _fs(url: str):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


def is_pipeline_folder(url: str) -> bool:
    """True for a folder with `model_index.json`, or with `unet/`, `vqvae/`|`vae/` and a scheduler config."""
    if not url:
        return False
    try:
        fs, path = _fs(url)
        if fs.exists(f"{path}/{INDEX_NAME}"):
            return True
        return (fs.exists(f"{path}/{SCHEDULER_CONFIG}") and fs.isdir(f"{path}/unet")
                and any(fs.isdir(f"{path}/{d}") for d in AUTOENCODER_DIRS))
    except (OSError, ValueError):
        return False


def _read_json(url: str, name: str) -> dict:
    """`name` (relative to the pipeline folder) parsed as a JSON object."""
    fs, path = _fs(url)
    if not fs.exists(f"{path}/{name}"):
        raise ValueError(f"pipeline folder {url} has no {name}")
    try:
        with fs.open(f"{path}/{name}", "r") as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"{name} in pipeline folder {url} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} in pipeline folder {url} is not a JSON object")
    return data


def autoencoder_dir(url: str) -> str:
    """The autoencoder subfolder name of the pipeline at `url` (`vqvae`, else `vae`)."""
    fs, path = _fs(url)
    if fs.exists(f"{path}/{INDEX_NAME}"):
        index = _read_json(url, INDEX_NAME)
        missing = [k for k in ("unet", "scheduler") if k not in index]
        names = [d for d in AUTOENCODER_DIRS if d in index]
        if missing or not names:
            raise ValueError(f"pipeline folder {url}: {INDEX_NAME} lists {sorted(k for k in index if not k.startswith('_'))}; "
                             "an unconditional LDM needs unet, scheduler and vqvae (or vae)")
        return names[0]
    for d in AUTOENCODER_DIRS:
        if fs.isdir(f"{path}/{d}"):
            return d
    raise ValueError(f"pipeline folder {url} has neither vqvae/ nor vae/")


def component_url(url: str, name: str) -> str:
    return f"{url.rstrip('/')}/{name}"


# ---------------------------------------------------------------- schedule

def scheduler_config(url: str) -> dict:
    """scheduler/scheduler_config.json as JSON (never unpickled), class checked against the allow-list."""
    config = _read_json(url, SCHEDULER_CONFIG)
    name = config.get("_class_name")
    if name not in ALLOWED_SCHEDULERS:
        raise ValueError(f"pipeline folder {url}: scheduler class {name!r} is not allowed; "
                         f"expected one of {ALLOWED_SCHEDULERS}")
    pred = config.get("prediction_type", "epsilon")
    if pred not in PREDICTIONS:
        raise ValueError(f"pipeline folder {url}: scheduler prediction_type {pred!r}; the solvers work with "
                         f"{' or '.join(PREDICTIONS)} UNets")
    return config


def schedule_from_config(config: dict, url: str = "") -> NoiseSchedule:
    """ᾱ exactly as the diffusers scheduler computes it from `config`."""
    klass = getattr(diffusers, config["_class_name"])
    try:
        scheduler = klass.from_config({k: v for k, v in config.items() if k != "_class_name"})
    except (ValueError, TypeError, NotImplementedError) as e:
        raise ValueError(f"pipeline folder {url}: cannot build {config['_class_name']} from its config ({e})") from None
    schedule = NoiseSchedule.from_diffusers(scheduler)
    a = schedule.alphas_cumprod
    if a.numel() < 2 or not bool(((a > 0) & (a < 1)).all()):
        raise ValueError(f"pipeline folder {url}: ᾱ must lie in (0, 1) at every timestep (zero terminal SNR "
                         "schedules are not supported)")
    return schedule


# ---------------------------------------------------------------- scale and fingerprint

def latent_scale(kind_dir: str, raw_config: dict, meta: dict, model) -> float:
    """The diffusion latent scale of the pipeline's autoencoder (rule in the module docstring)."""
    if meta.get("latent_scale"):
        return float(meta["latent_scale"])
    if kind_dir == "vqvae":
        raw = raw_config.get("scaling_factor")
        return float(raw) if raw is not None and float(raw) not in (1.0, DIFFUSERS_DEFAULT_SCALE) else 1.0
    return float(getattr(model.config, "scaling_factor", None) or 1.0)


def _canonical(config: dict) -> bytes:
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    cfg["_class_name"] = config.get("_class_name")
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def pipeline_fingerprint(url: str) -> str:
    """Hash of the whole prior: autoencoder and UNet fingerprints plus the canonical scheduler config."""
    ae = folder_fingerprint(component_url(url, autoencoder_dir(url)))
    unet = folder_fingerprint(component_url(url, "unet"))
    h = hashlib.sha256(f"pipeline|{ae}|{unet}|".encode() + _canonical(scheduler_config(url)))
    return h.hexdigest()[:16]


def resolve_autoencoder_url(url: str) -> str:
    """Where an autoencoder URL points: a pipeline folder means its vqvae/ (or vae/) subfolder."""
    return component_url(url, autoencoder_dir(url)) if is_pipeline_folder(url) else url


def autoencoder_fingerprint(url: str) -> str:
    """Fingerprint of the autoencoder `url` denotes, as loaded (stored dtype).

    Training records `model_fingerprint` of the loaded model; for folders written by another
    diffusers version (CompVis's: config defaults missing, old attention key names) that
    differs from the file hash, so the comparison must be made on the loaded model. For
    folders written by `save_model` both hashes are equal.
    """
    comp = resolve_autoencoder_url(url)
    with tempfile.TemporaryDirectory(prefix="flash-aefp-") as tmp:
        model, _ = build(download(comp, tmp), comp)
    return model_fingerprint(model)


# ---------------------------------------------------------------- loading

def _fetch(url: str, tmp: str) -> str:
    """A local folder holding the component at `url` (in place when local; never fetches pickle bytes)."""
    dest = tempfile.mkdtemp(dir=tmp)
    return download(url, dest)


def load_pipeline_autoencoder(url: str, device="cpu", dtype=None) -> tuple[Autoencoder, str, dict]:
    """(Autoencoder with the pipeline's latent scale, its fingerprint as loaded, its flash metadata)."""
    sub = autoencoder_dir(url)
    comp = component_url(url, sub)
    with tempfile.TemporaryDirectory(prefix="flash-pipe-") as tmp:
        folder = _fetch(comp, tmp)
        raw_config, _, _ = local_files(folder, comp)
        model, meta = build(folder, comp)
    fp = model_fingerprint(model)
    if type(model).__name__ not in AUTOENCODER_CLASSES:
        raise ValueError(f"{comp} holds a {type(model).__name__}, not an autoencoder")
    scale = latent_scale(sub, raw_config, meta, model)
    return Autoencoder(cast(model, device, dtype).eval(), scale), fp, meta


def load_pipeline_folder(url: str, device="cpu", dtype=None, autoencoder: Autoencoder | None = None) -> LatentDiffusion:
    """The LatentDiffusion of a pipeline folder: its autoencoder (or `autoencoder`), UNet and ᾱ.

    The UNet must be an ε- or v-prediction UNet2DModel on the autoencoder's latent channels.
    """
    config = scheduler_config(url)
    schedule = schedule_from_config(config, url)
    ae = autoencoder if autoencoder is not None else load_pipeline_autoencoder(url, device, dtype)[0]
    unet_url = component_url(url, "unet")
    unet = load_model(unet_url, device=device, dtype=dtype)
    if type(unet).__name__ != "UNet2DModel":
        raise ValueError(f"{unet_url} holds a {type(unet).__name__}, not a UNet2DModel (unconditional LDMs only)")
    cin, cout = int(unet.config.in_channels), int(unet.config.out_channels)
    if cin != ae.latent_channels or cout != cin:
        raise ValueError(f"{unet_url}: UNet maps {cin}→{cout} channels, but the autoencoder has "
                         f"{ae.latent_channels} latent channels (an ε-UNet maps them to themselves)")
    return LatentDiffusion(ae, unet, schedule, config.get("prediction_type", "epsilon")).eval()

