"""The degradation generator: per-key operator dicts and degraded samples from clean ones.

Every draw of a key (its family in a mix, its severity t, the operator's own seed) comes
from (job seed, key, purpose) streams, so a key's degradation does not depend on its shard
partners, the batch size or the order: `flash-restore degrade` and the evaluation's task
data produce the same bytes for the same key.
"""
from __future__ import annotations

from typing import Iterator

import torch

from pipeline.io.samples import encode_png
from pipeline.operators import OPERATORS
from pipeline.sampling.seeding import DEGRADATION, sample_generator, sample_seed

# Random streams of the degradation job, each derived from (seed, key): adding a draw to
# one never shifts another. The operator's own seed (masks, kernels) comes from DEGRADATION.
SEVERITY_PURPOSE = "degradation_severity"
CHOICE_PURPOSE = "degradation_choice"
MEASUREMENT_NOTE = ("y01 = A(x01) + noise_sigma*n in [0,1], then clipped to [0,1] and quantized to 8-bit PNG "
                    "(jpeg: x01 + noise_sigma*n rounded to 8 bits and encoded by libjpeg as the .jpg member); "
                    "the clean reference is lossless")


def parse_severity(spec: str) -> tuple[float, float]:
    """`uniform` | `fixed:T` | `range:A,B` -> the interval t is drawn from (A == B: fixed)."""
    spec = spec.strip()
    try:
        if spec == "uniform":
            lo, hi = 0.0, 1.0
        elif spec.startswith("fixed:"):
            lo = hi = float(spec[6:])
        elif spec.startswith("range:"):
            lo, hi = (float(v) for v in spec[6:].split(","))
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"severity {spec!r}: expected uniform | fixed:T | range:A,B") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"severity {spec!r}: need 0 <= A <= B <= 1")
    return lo, hi


def parse_operators(spec: str) -> list[tuple[str, float]]:
    """`name` or a weighted mix `name=w,name=w` -> [(family, weight)], families checked."""
    out = []
    for part in spec.split(","):
        name, _, w = part.strip().partition("=")
        if name not in OPERATORS:
            raise ValueError(f"operator {name!r}: known {sorted(OPERATORS)}")
        weight = float(w) if w else 1.0
        if not weight > 0:
            raise ValueError(f"operator {name!r}: weight must be > 0")
        out.append((name, weight))
    return out


def degradation_params(key: str, seed: int, families: list[tuple[str, float]], severity: tuple[float, float],
                       noise: float, overrides: dict | None = None) -> dict:
    """One key's operator dict: family, t and operator seed all from the key's own streams."""
    family = families[0][0]
    if len(families) > 1:
        u = float(torch.rand((), generator=sample_generator(seed, key, CHOICE_PURPOSE), dtype=torch.float64))
        total, acc = sum(w for _, w in families), 0.0
        for name, w in families:
            acc += w / total
            family = name
            if u < acc:
                break
    lo, hi = severity
    u = float(torch.rand((), generator=sample_generator(seed, key, SEVERITY_PURPOSE), dtype=torch.float64))
    t = round(lo + (hi - lo) * u, 6)
    return OPERATORS[family].params_for(t, noise_sigma=noise, seed=sample_seed(seed, key, DEGRADATION),
                                        **(overrides or {}))


def degrade_samples(batch: list, seed: int, families, severity, noise, overrides) -> Iterator[dict]:
    """Degrade samples of one shard; batches are per family and image size (photos at their own
    size mix sizes in a shard), results do not depend on partners."""
    params = [degradation_params(s.key, seed, families, severity, noise, overrides) for s in batch]
    groups = [(p["operator"], tuple(s.image01.shape[-2:])) for p, s in zip(params, batch)]
    out: dict[str, dict] = {}
    for family, size in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == (family, size)]
        keys = [batch[i].key for i in rows]
        for i in rows:
            params[i] = OPERATORS[family].for_image(params[i], *size)
        op = OPERATORS[family].from_dicts([params[i] for i in rows], keys)
        x01 = torch.stack([batch[i].image01 for i in rows])
        gens = [sample_generator(seed, k, DEGRADATION) for k in keys]
        with torch.no_grad():
            files = op.archive_files(x01, gens)
        for j, i in enumerate(rows):
            s = batch[i]
            source = dict(s.params or {})
            provenance = {"photo": source.get("photo"), "clean_key": s.key, "measurement": MEASUREMENT_NOTE,
                          **{k: source[k] for k in ("short_side", "row", "col") if k in source}}
            ext, data = files[j]
            out[s.key] = {"__key__": s.key, ext: data, "clean.png": encode_png(s.image01),
                          "json": {**op.to_dicts()[j], "provenance": provenance}}
    for s in batch:
        yield out[s.key]
