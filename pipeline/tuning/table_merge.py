"""Merge settings tables written by separate `tune` runs into one, by the tuner's own argmax.

Why: on a small machine a grid is faster run one value per process, each on a scratch table,
and a winner on a grid's edge is bracketed by one more run. The tuner is deterministic on
the same crops, seeds and noise, so scores of different runs compare directly, and the merge
keeps, per solver / family / mode, the entry with the higher mean PSNR. Scores measured on
other crops, noise or schedules do not compare, and the merge refuses them rather than guess.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """What the merge did with one scratch entry."""

    source: str           # the scratch table
    entry: str            # solver/family/mode
    action: str           # added | replaced | kept | same
    kept_psnr: float | None
    offered_psnr: float

    @property
    def changes(self) -> bool:
        return self.action in ("added", "replaced")


def comparable(a: dict, b: dict) -> str | None:
    """Why two entries' scores do not compare (None when they do)."""
    for key in ("crops", "noise"):
        if a["score"].get(key) != b["score"].get(key):
            return f"score.{key} {a['score'].get(key)} vs {b['score'].get(key)}"
    if a.get("steps") != b.get("steps"):
        return f"steps {a.get('steps')} vs {b.get('steps')}"
    return None


def merge(target: dict, scratches: list[tuple[str, dict]]) -> tuple[dict, list[Decision]]:
    """Return target with the scratch tables' better entries in it (version + 1) and what was done.

    Raises ValueError naming the first entry whose scores do not compare; target is unchanged.
    """
    out = copy.deepcopy(target or {})
    out.setdefault("settings", {})
    decisions: list[Decision] = []
    for source, scratch in scratches:
        decisions += _merge_one(out["settings"], scratch, source)
    changed = [d.source for d in decisions if d.changes]
    if changed:
        out["version"] = int(out.get("version", 0)) + 1
        sources = ", ".join(dict.fromkeys(changed))
        out["tuned_on"] = f"{out.get('tuned_on', '')}; merged {sources}".lstrip("; ")
    return out, decisions


def _merge_one(settings: dict, scratch: dict, source: str) -> list[Decision]:
    decisions: list[Decision] = []
    offered = scratch.get("settings") if isinstance(scratch, dict) else None
    if not isinstance(offered, dict):
        raise ValueError(f"{source}: not a settings table (no 'settings' mapping)")
    for solver, families in offered.items():
        for family, modes in (families or {}).items():
            for mode, new in (modes or {}).items():
                name = f"{solver}/{family}/{mode}"
                if not isinstance(new, dict) or not isinstance(new.get("score"), dict) or \
                        not isinstance(new["score"].get("psnr"), (int, float)):
                    raise ValueError(f"{source}: {name} has no score.psnr")
                slot = settings.setdefault(solver, {}).setdefault(family, {})
                old = slot.get(mode)
                if old is None:
                    slot[mode] = copy.deepcopy(new)
                    decisions.append(Decision(source, name, "added", None, new["score"]["psnr"]))
                    continue
                why = comparable(old, new)
                if why:
                    raise ValueError(f"{source}: {name} was scored differently from the table's entry ({why}); "
                                     "rerun it on the same crops, noise and schedule")
                if old == new:
                    action = "same"
                elif new["score"]["psnr"] > old["score"]["psnr"]:
                    slot[mode], action = copy.deepcopy(new), "replaced"
                else:
                    action = "kept"
                decisions.append(Decision(source, name, action, old["score"]["psnr"], new["score"]["psnr"]))
    return decisions
