"""Model folders, one at a time: config + safetensors at any fsspec URL, checked before use.

Why a module of its own: the design forbids pickled checkpoints, so every load goes through
a validated safetensors file, a class allow-list and an explicit key/shape check (a
mismatch must be an error, never a silently random-initialised layer). Both loaders above it
(`model_store` for our folders and priors, `pipeline_folder` for diffusers pipelines) build
their components here, so neither needs the other's internals.

Folder layout: `config.json` (diffusers config with `_class_name`),
`diffusion_pytorch_model.safetensors`, and optionally `flash_model.json` (our metadata:
kind, latent scale, schedule, fingerprints of the models this one depends on).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile

import diffusers
import fsspec
import torch
from safetensors.torch import load_file

from pipeline.models.latent import autoencoder_class
from pipeline.models.parameter_estimator import ParameterEstimator
from pipeline.models.severity import SeverityEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
META_NAME = "flash_model.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth", ".pkl", ".pickle")
ALLOWED_CLASSES = ("VQModel", "AutoencoderKL", "SpaceToDepthAutoencoder", "UNet2DModel", "SeverityEncoder",
                   "ParameterEstimator")

# torch dtype -> safetensors dtype tag, so in-memory and on-disk fingerprints agree.
_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def allowed_class(name: str):
    """The class for a config `_class_name`; anything outside the allow-list is refused."""
    if name == "SeverityEncoder":
        return SeverityEncoder
    if name == "UNet2DModel":
        return diffusers.UNet2DModel
    if name == "ParameterEstimator":
        return ParameterEstimator
    if name in ALLOWED_CLASSES:
        return autoencoder_class(name)
    raise ValueError(f"model class {name!r} is not allowed; expected one of {ALLOWED_CLASSES}")


def cast(model, device, dtype):
    """nn.Module.to (diffusers' .to(dtype=...) logs a spurious warning about fp32 modules)."""
    return torch.nn.Module.to(model, device=device, dtype=dtype)


def file_system(url: str):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


# ---------------------------------------------------------------- saving

def save_model(model, url: str, extra: dict | None = None) -> str:
    """Write `model` (a diffusers ModelMixin) as config + safetensors under `url`; returns its fingerprint.

    The weights go up first and config.json last, so a folder with a config is complete.
    """
    fs, path = file_system(url)
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
        return folder_fingerprint_local(tmp)


# ---------------------------------------------------------------- validation

def check_safetensors(file: str, url: str) -> dict:
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


def local_files(folder: str, url: str) -> tuple[dict, str, dict]:
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


def download(url: str, dest: str) -> str:
    """Copy the model folder at `url` into `dest` (or use it in place when it is local)."""
    fs, path = file_system(url)
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

def canonical_config(config) -> bytes:
    """Config JSON without private/version keys, sorted, so hashes do not move with diffusers versions."""
    cfg = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    cfg["_class_name"] = dict(config).get("_class_name")
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=list).encode()


def folder_fingerprint_local(folder: str, url: str | None = None) -> str:
    config, wfile, _ = local_files(folder, url or folder)
    tensors = check_safetensors(wfile, url or folder)
    h = hashlib.sha256(canonical_config(config))
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


def model_fingerprint(model) -> str:
    """The same hash for an in-memory model: equals `fingerprint(url)` of the folder `save_model` writes."""
    config = dict(model.config)
    config["_class_name"] = type(model).__name__
    h = hashlib.sha256(canonical_config(config))
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{_ST_DTYPES[t.dtype]}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- loading

def build(folder: str, url: str, cls=None):
    config, wfile, meta = local_files(folder, url)
    check_safetensors(wfile, url)
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
        cast(model, None, max(set(floats), key=floats.count))
    model.load_state_dict(state, strict=True)
    return model, meta


def load_model(url: str, cls=None, device="cpu", dtype=None, *, return_meta: bool = False):
    """Load a validated model from `url` (in eval mode, stored dtype unless `dtype`); with
    `return_meta` also its flash_model.json dict.

    The folder is downloaded to a temporary directory; nothing pickled is read, ever.
    """
    with tempfile.TemporaryDirectory(prefix="flash-load-") as tmp:
        model, meta = build(download(url, tmp), url, cls)
    model = cast(model, device, dtype).eval()
    return (model, meta) if return_meta else model


def load_meta(url: str) -> dict:
    """flash_model.json of the folder at `url` ({} when there is none)."""
    fs, path = file_system(url)
    target = f"{path}/{META_NAME}"
    if not fs.exists(target):
        return {}
    with fs.open(target, "r") as f:
        return json.load(f)




def folder_fingerprint(url: str) -> str:
    """`fingerprint` of one plain model folder (config + safetensors) at any URL."""
    with tempfile.TemporaryDirectory(prefix="flash-fp-") as tmp:
        return folder_fingerprint_local(download(url, tmp), url)
