"""Set-level distances between two image sets (FID and KID from one Inception pass), with the
floor real photos score at the same n: shared by `report-models` (the prior's samples) and
the reproduction suite (a cell's restorations), so both quote the same measurement.
"""
from __future__ import annotations

from pipeline.quality.metrics import FID, frechet_distance_from_features, kernel_inception_distance


def image_set_distances(fake01, real01, device, floor01=None) -> dict:
    """FID and KID of `fake01` against `real01` from one Inception pass, and the same of `floor01`
    (real crops from other photos, as many as the fakes) against `real01`: the score real photos
    get at this n, below which no generator can go (FID is biased at small n; KID is not)."""
    metric = FID(device)
    if metric.missing is not None:
        return {"missing": metric.missing.reason}
    real = metric.features(real01)
    out = {}
    for name, images in (("", fake01), ("floor_", floor01)):
        if images is None:
            continue
        feats = metric.features(images)
        if min(len(feats), len(real)) < 2:
            return {"missing": f"FID/KID need at least 2 images per set; got {len(real)} real, {len(feats)} generated"}
        kid, kid_std = kernel_inception_distance(real, feats)
        out.update({f"{name}fid": frechet_distance_from_features(real, feats), f"{name}kid": kid,
                    f"{name}kid_std": kid_std, f"{name}n": len(feats)})
    return out
