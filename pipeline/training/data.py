"""Training crops and the (seed, step) → batch map that makes training resumable.

Why: a resumed run must equal an uninterrupted one, so the data order and every random draw
are pure functions of (seed, step), never of process history. Epoch e is a permutation
seeded by (seed, e); global batch s is positions [s·B, (s+1)·B) of the concatenated epochs.
Data-parallel rank r takes a contiguous slice of each global batch, so the set of samples a
step sees does not depend on the number of workers.

Inputs: a corpus export folder (`pipeline.corpus.crops.write_corpus_export`) or clean-crop
WebDataset shards (`<key>.png`), at a local path or any fsspec URL.
"""
from __future__ import annotations

from functools import lru_cache

import fsspec
import numpy as np
import torch

from pipeline.io.samples import SampleError
from pipeline.io.shards import iter_samples, list_shards
from pipeline.sampling.seeding import sample_seed

EXPORT_INDEX = "index.parquet"


def step_generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator for one training step and one purpose (data order, noise, severities…)."""
    return torch.Generator().manual_seed(sample_seed(seed, f"train-step-{int(step)}", purpose))


def _is_export(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if path.endswith((".parquet", "meta.json", "crops.jpegs")):
        return True
    return fs.isdir(path) and fs.exists(f"{path}/{EXPORT_INDEX}")


def _load_shards(url: str) -> tuple[np.ndarray, list[str]]:
    images, keys, errors = [], [], []
    for shard in list_shards(url):
        for item in iter_samples(shard):
            if isinstance(item, SampleError):
                errors.append(str(item))
                continue
            images.append((item.image01.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))
            keys.append(item.key)
    if errors and not images:
        raise ValueError(f"training data {url}: no readable crops ({len(errors)} errors, e.g. {errors[0]})")
    return (np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)), keys


def check_data(url: str) -> None:
    """Cheap existence check of a data URL (no decoding), for failing before models or Ray start."""
    if not url:
        raise ValueError("no training data: pass --data (a corpus export folder or clean-crop shards)")
    try:
        if _is_export(url):
            return
        # lazy: an optional dependency, missing is handled
        from pipeline.io.shards import list_shards

        list_shards(url)
    except ValueError as exc:
        raise ValueError(f"training data {url}: {exc}" if url not in str(exc) else str(exc)) from None
    except (OSError, ImportError) as exc:
        raise ValueError(f"training data {url} cannot be read ({type(exc).__name__}: {exc})") from None


def load_crops(url: str, max_items: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Clean crops as uint8 (N, 3, H, W) plus their keys; ValueError naming `url` on any problem.

    Raised before training starts, so a bad `--data` fails fast.
    """
    if not url:
        raise ValueError("no training data: pass --data (a corpus export folder or clean-crop shards)")
    try:
        if _is_export(url):
            # lazy: an optional dependency, missing is handled
            from pipeline.corpus.crops import load_corpus_export

            arr, keys, _ = load_corpus_export(url)
        else:
            arr, keys = _load_shards(url)
    except ValueError as exc:
        if url in str(exc):
            raise
        raise ValueError(f"training data {url}: {exc}") from None
    except (OSError, ImportError) as exc:
        raise ValueError(f"training data {url} cannot be read ({type(exc).__name__}: {exc})") from None
    if len(keys) == 0:
        raise ValueError(f"training data {url} holds no crops")
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"training data {url}: expected square RGB crops, got array shape {arr.shape}")
    if max_items is not None:
        arr, keys = arr[:max_items], keys[:max_items]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous(), list(keys)


class BatchPlan:
    """Which items (and whether each is flipped) make up global batch `step`: a function of (seed, step)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, hflip: bool = True):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need items and a positive batch size (items {num_items}, batch {batch_size})")
        self.n, self.batch, self.seed, self.hflip = int(num_items), int(batch_size), int(seed), bool(hflip)

    @lru_cache(maxsize=4)
    def _epoch(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=step_generator(self.seed, epoch, "epoch-order"))

    def indices(self, step: int) -> torch.Tensor:
        pos = torch.arange(step * self.batch, (step + 1) * self.batch)
        epochs, within = pos // self.n, pos % self.n
        return torch.stack([self._epoch(int(e))[int(w)] for e, w in zip(epochs, within)])

    def flips(self, step: int) -> torch.Tensor:
        if not self.hflip:
            return torch.zeros(self.batch, dtype=torch.bool)
        return torch.rand(self.batch, generator=step_generator(self.seed, step, "hflip")) < 0.5


def rank_rows(batch_size: int, rank: int, world: int) -> slice:
    """The contiguous rows of a global batch that data-parallel rank `rank` trains on."""
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} must be a multiple of the number of workers {world}")
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


def gather(images: torch.Tensor, index: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Rows `index` of a (N, C, H, W) tensor, horizontally flipped where `flip`; uint8 → [0,1] float."""
    x = images[index]
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x
