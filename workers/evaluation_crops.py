"""The evaluation's clean crops: the committed dev export, or crops cut from a photo list.

Why a guard here: the solver settings were tuned on the training photos, so an evaluation
on them would flatter the tuned solvers; they are refused by name and by overlap.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.corpus.crops import iter_crops, load_corpus_export
from pipeline.corpus.photos import read_photo_list
from pipeline.model_report.measurements import load_eval_crops, resolve_photos, spread


def evaluation_crops(photos: str, n: int, size: int):
    """(crops (N,3,size,size) in [0,1], keys, what they are): n crops spread over the photos.

    `dev` is the committed dev export; a photo-list file is cut into crops as the corpus is.
    Training photos are refused: the solver settings were tuned on them."""
    if photos == "train":
        raise ValueError("--photos train: the solver settings were tuned on the training photos; evaluate on "
                         "dev or another photo list")
    if photos == "dev" or Path(photos, "meta.json").exists():
        url = resolve_photos(photos)
        x, keys = load_eval_crops(url, size), load_corpus_export(url)[1]
        source = f"corpus export {url}"
    else:
        entries = read_photo_list(photos)
        if not entries:
            raise ValueError(f"--photos {photos} lists no photos")
        overlap = set(entries) & set(read_photo_list("train"))
        if overlap:
            raise ValueError(f"--photos {photos} holds training photos ({sorted(overlap)[:3]}…); the solver "
                             "settings were tuned on them")
        read_photo_list(photos, check=True)  # every entry resolves, before any crop is cut
        crops = [c for batch, _ in iter_crops(entries, size=size) for c in batch]
        if not crops:
            raise ValueError(f"--photos {photos}: no crops kept from {len(entries)} photos")
        x = torch.from_numpy(np.stack([c.pixels for c in crops])).permute(0, 3, 1, 2).float() / 255.0
        keys, source = [c.key for c in crops], f"photo list {photos} ({len(entries)} photos)"
    idx = spread(len(keys), n)
    return x[idx], [keys[i] for i in idx], source
