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
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings

import fsspec
import torch
from safetensors.torch import load_file

from pipeline.models.latent import Autoencoder, LatentDiffusion
from pipeline.sampling.schedules import NoiseSchedule

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
META_NAME = "flash_model.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth", ".pkl", ".pickle")
ALLOWED_CLASSES = ("VQModel", "AutoencoderKL", "SpaceToDepthAutoencoder", "UNet2DModel", "SeverityEncoder")

# torch dtype -> safetensors dtype tag, so in-memory and on-disk fingerprints agree.
_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def allowed_class(name: str):
    """The class for a config `_class_name`; anything outside the allow-list is refused."""
    if name == "SeverityEncoder":
        from pipeline.models.severity import SeverityEncoder
        return SeverityEncoder
    if name == "SpaceToDepthAutoencoder":
        from pipeline.models.space_to_depth_autoencoder import SpaceToDepthAutoencoder
        return SpaceToDepthAutoencoder
    if name in ("VQModel", "AutoencoderKL", "UNet2DModel"):
        import diffusers
        return getattr(diffusers, name)
    raise ValueError(f"model class {name!r} is not allowed; expected one of {ALLOWED_CLASSES}")


def _cast(model, device, dtype):
    """nn.Module.to (diffusers' .to(dtype=...) logs a spurious warning about fp32 modules)."""
    return torch.nn.Module.to(model, device=device, dtype=dtype)


def _fs(url: str):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


# ---------------------------------------------------------------- saving

def save_model(model, url: str, extra: dict | None = None) -> str:
    """Write `model` (a diffusers ModelMixin) as config + safetensors under `url`; returns its fingerprint.

    The weights go up first and config.json last, so a folder with a config is complete.
    """
    fs, path = _fs(url)
    with tempfile.TemporaryDirectory(prefix="flash-save-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        names = sorted(os.listdir(tmp))
        if WEIGHTS_NAME not in names:
            raise ValueError(f"save_pretrained wrote no single {WEIGHTS_NAME} (sharded?) for {url}")
        if extra is not None:
            with open(os.path.join(tmp, META_NAME), "w") as f:
                json.dump(extra, f, indent=2, sort_keys=True)
            names.append(META_NAME)
        fs.makedirs(path, exist_ok=True)
        for name in sorted(set(names), key=lambda n: n == CONFIG_NAME):
            fs.put_file(os.path.join(tmp, name), f"{path}/{name}")
        return _fingerprint_local(tmp)


# ---------------------------------------------------------------- validation

def _check_safetensors(file: str, url: str) -> dict:
    """Parse the safetensors header and check the file holds every byte it promises."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"safetensors file at {url} is truncated or corrupt (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"safetensors file at {url} is truncated or corrupt (header of {n} bytes, file {size})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"safetensors file at {url} is corrupt: unreadable header ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"safetensors file at {url} is corrupt: header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for k, v in tensors.items():
        try:
            begin, stop = v["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"safetensors file at {url} is corrupt: bad entry for {k!r}") from None
        end = max(end, int(stop))
    if 8 + n + end != size:
        raise ValueError(f"safetensors file at {url} is truncated or corrupt: expected {8 + n + end} bytes, found {size}")
    return tensors


def _local_files(folder: str, url: str) -> tuple[dict, str, dict]:
    """Validate a downloaded folder; returns (config, weights file, flash metadata)."""
    names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if not weights:
        if pickles:
            raise ValueError(f"{url} holds only pickle-format weights ({', '.join(pickles)}); pickle files are never "
                             "loaded (they can run arbitrary code). Convert them to safetensors.")
        raise ValueError(f"{url} holds no .safetensors weights (found: {sorted(names) or 'nothing'})")
    if CONFIG_NAME not in names:
        raise ValueError(f"{url} has no {CONFIG_NAME}")
    if len(weights) > 1 and WEIGHTS_NAME not in weights:
        raise ValueError(f"{url} holds several safetensors files {weights}; sharded models are not supported")
    wname = WEIGHTS_NAME if WEIGHTS_NAME in weights else weights[0]
    try:
        with open(os.path.join(folder, CONFIG_NAME)) as f:
            config = json.load(f)
    except ValueError as e:
        raise ValueError(f"{url}/{CONFIG_NAME} is not valid JSON ({e})") from None
    meta = {}
    if META_NAME in names:
        with open(os.path.join(folder, META_NAME)) as f:
            meta = json.load(f)
    return config, os.path.join(folder, wname), meta


def _download(url: str, dest: str) -> str:
    """Copy the model folder at `url` into `dest` (or use it in place when it is local)."""
    fs, path = _fs(url)
    if "file" in fs.protocol or "local" in fs.protocol:
        if not os.path.isdir(path):
            raise ValueError(f"no model folder at {url}")
        return path
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        raise ValueError(f"no model folder at {url}") from None
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name in (CONFIG_NAME, META_NAME) or name.endswith(".safetensors") or name.endswith(PICKLE_SUFFIXES):
            if name.endswith(PICKLE_SUFFIXES):  # record its presence only; never fetch pickle bytes
                open(os.path.join(dest, name), "wb").close()
            else:
                fs.get_file(entry, os.path.join(dest, name))
    return dest


# ---------------------------------------------------------------- fingerprints

def _canonical_config(config) -> bytes:
    """Config JSON without private/version keys, sorted, so hashes do not move with diffusers versions."""
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    cfg["_class_name"] = dict(config).get("_class_name")
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=list).encode()


def _fingerprint_local(folder: str, url: str | None = None) -> str:
    config, wfile, _ = _local_files(folder, url or folder)
    tensors = _check_safetensors(wfile, url or folder)
    h = hashlib.sha256(_canonical_config(config))
    with open(wfile, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        base = 8 + n
        for key in sorted(tensors):
            info = tensors[key]
            h.update(f"{key}|{info['dtype']}|{list(info['shape'])}|".encode())
            begin, stop = info["data_offsets"]
            f.seek(base + begin)
            left = stop - begin
            while left > 0:
                chunk = f.read(min(left, 1 << 24))
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()[:16]


def fingerprint(url: str) -> str:
    """sha256 (16 hex) over the canonical config and every tensor's name, dtype, shape and bytes.

    A pipeline folder hashes as a whole (autoencoder, UNet and scheduler config).
    """
    from pipeline.models.pipeline_folder import is_pipeline_folder, pipeline_fingerprint

    if is_pipeline_folder(url):
        return pipeline_fingerprint(url)
    with tempfile.TemporaryDirectory(prefix="flash-fp-") as tmp:
        return _fingerprint_local(_download(url, tmp), url)


def model_fingerprint(model) -> str:
    """The same hash for an in-memory model: equals `fingerprint(url)` of the folder `save_model` writes."""
    config = dict(model.config)
    config["_class_name"] = type(model).__name__
    h = hashlib.sha256(_canonical_config(config))
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{_ST_DTYPES[t.dtype]}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- loading

def _build(folder: str, url: str, cls=None):
    config, wfile, meta = _local_files(folder, url)
    _check_safetensors(wfile, url)
    name = config.get("_class_name")
    klass = allowed_class(name)
    if cls is not None and cls is not klass:
        raise ValueError(f"{url} holds a {name}, not a {cls.__name__}")
    model = klass.from_config(config)
    try:
        state = load_file(wfile)
    except Exception as e:  # safetensors raises its own error type
        raise ValueError(f"safetensors file at {url} is corrupt: {e}") from None
    if hasattr(model, "_fix_state_dict_keys_on_load"):  # old diffusers attention names
        state = model._fix_state_dict_keys_on_load(state)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:5]) + (f" … (+{len(keys) - 5})" if len(keys) > 5 else "")
        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(wrong)} with wrong shapes ({few([f'{k} {tuple(state[k].shape)} vs {expected[k]}' for k in wrong])})"
                 if wrong else ""]
        raise ValueError(f"weights at {url} do not match the {name} architecture in its config: "
                         + "; ".join(p for p in parts if p))
    floats = [t.dtype for t in state.values() if t.is_floating_point()]
    if floats:  # keep the stored precision (load_state_dict would copy into float32 params)
        _cast(model, None, max(set(floats), key=floats.count))
    model.load_state_dict(state, strict=True)
    return model, meta


def load_model(url: str, cls=None, device="cpu", dtype=None, *, return_meta: bool = False):
    """Load a validated model from `url` (in eval mode, stored dtype unless `dtype`); with
    `return_meta` also its flash_model.json dict.

    The folder is downloaded to a temporary directory; nothing pickled is read, ever.
    """
    with tempfile.TemporaryDirectory(prefix="flash-load-") as tmp:
        model, meta = _build(_download(url, tmp), url, cls)
    model = _cast(model, device, dtype).eval()
    return (model, meta) if return_meta else model


def load_meta(url: str) -> dict:
    """flash_model.json of the folder at `url` ({} when there is none)."""
    fs, path = _fs(url)
    target = f"{path}/{META_NAME}"
    if not fs.exists(target):
        return {}
    with fs.open(target, "r") as f:
        return json.load(f)


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
    from pipeline.models import pipeline_folder as pf

    if pf.is_pipeline_folder(unet_url):
        return _load_pipeline_prior(autoencoder_url, unet_url, device, dtype, on_mismatch)
    ae_src = pf.resolve_autoencoder_url(autoencoder_url)
    with tempfile.TemporaryDirectory(prefix="flash-ldm-") as tmp:
        folder = _download(ae_src, tmp)
        ae_fp = _fingerprint_local(folder, autoencoder_url)
        ae_model, ae_meta = _build(folder, autoencoder_url)
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
    ae = Autoencoder(_cast(ae_model, device, dtype), scale)
    return LatentDiffusion(ae, unet, _schedule_from_meta(meta.get("schedule")),
                           meta.get("prediction_type", "epsilon")).eval()


def _load_pipeline_prior(autoencoder_url: str, pipe_url: str, device, dtype, on_mismatch: str) -> LatentDiffusion:
    """`load_latent_diffusion` for a pipeline folder; with "warn" a mismatched autoencoder is used at the pipeline's scale."""
    from pipeline.models import pipeline_folder as pf

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
    from pipeline.models.pipeline_folder import load_pipeline_folder as load

    return load(url, device, dtype)


def model_image_size(autoencoder_url: str) -> int | None:
    """The image side the autoencoder was built for (its config's `sample_size`), or None."""
    from pipeline.models.pipeline_folder import resolve_autoencoder_url

    fs, path = _fs(resolve_autoencoder_url(autoencoder_url))
    try:
        with fs.open(f"{path}/{CONFIG_NAME}", "r") as f:
            size = json.load(f).get("sample_size")
    except (OSError, ValueError):
        return None
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) if isinstance(size, int) and size > 0 else None

