"""docs/reproduction.md from the stored cells alone: the paper's table beside ours, the
adaptivity, robustness and severity experiments, sample grids, and a verdict per target.

Why from stored cells only: the report can be rebuilt (and re-read by a reviewer) without
recomputing, and every figure names the cell — its config and model hashes — it came from.
A cell not yet run shows as such; it is never filled in.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from scipy.stats import kendalltau

from pipeline.quality.statistics import paired_mean_ci, pearson, spearman
from pipeline.reproduction.cell_store import load_cell
from pipeline.reproduction.suite import TASKS, Budget, Cell, applicable, noise_task, solver_names, task_named
from pipeline.restoration.solver_settings import resolve, table_for, tuned
from pipeline.solvers import SOLVERS

PAPER = Path(__file__).with_name("paper_table.yaml")
LABELS = {"none/input": "degraded input", "none/decode": "autoencoder only, D(ẑ)"}
METRICS = ("psnr", "ssim", "lpips")


def method_label(solver: str, mode: str) -> str:
    if solver == "none":
        return LABELS[f"none/{mode}"]
    name = SOLVERS[solver].label
    return {"flash": f"Flash({name})", "baseline": name, "equal_nfe": f"{name} at Flash's NFE"}.get(mode, f"{name} {mode}")


def ok_rows(cell: dict | None, keys: set | None = None) -> list[dict]:
    if not cell:
        return []
    return [r for r in cell["rows"] if r["status"] == "ok" and (keys is None or r["key"] in keys)]


def mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def paired(a: dict | None, b: dict | None, key: str = "psnr") -> dict | None:
    """Per-image a − b on the images both cells restored, with a bootstrap CI."""
    ra, rb = {r["key"]: r for r in ok_rows(a)}, {r["key"]: r for r in ok_rows(b)}
    common = sorted(k for k in set(ra) & set(rb) if ra[k].get(key) is not None and rb[k].get(key) is not None)
    if len(common) < 2:
        return None
    return paired_mean_ci([ra[k][key] for k in common], [rb[k][key] for k in common])


def fmt(v, d: int = 2) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def ci_text(ci: dict | None) -> str:
    return "n < 2" if ci is None else f"{ci['mean']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}] (n={ci['n']})"


def kid_text(cell: dict | None, subset: str = "all") -> tuple[str, str]:
    sm = (cell or {}).get("set_metrics", {}).get(subset, {})
    if not cell:
        return "–", "–"
    if "missing" in sm:
        return "missing", "missing"
    spread = f" ± {sm['kid_std']:.3f}" if sm["kid_std"] > 1e-9 else "²"   # one subset of all images: no spread
    return f"{sm['fid']:.1f}", f"{sm['kid']:.3f}{spread}"


def stale_settings(cell: Cell, record: dict | None, settings: str = "tuned") -> bool:
    """True when the settings table (`settings`, as `evaluate --settings` named it) now resolves
    this cell to other settings than it ran with (it was retuned since): its figures stand for a
    configuration jobs no longer run."""
    st = (record or {}).get("settings")
    if not st or cell.solver == "none":
        return False
    family = task_named(cell.task).family
    flash = cell.mode not in ("baseline", "equal_nfe")
    table = table_for(settings)
    user = tuned(cell.solver, family, "equal_nfe", table)["params"] if cell.mode == "equal_nfe" else {}
    params, c = resolve(cell.solver, family, flash, user, "tuned", table)
    return params != st.get("params") or (flash and c != st.get("noise_correction"))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("✓" if ok else "✗")


class Report:
    """Loads every cell once; sections read from it."""

    def __init__(self, out: Path, cells: list[Cell], budget: Budget, settings: str = "tuned"):
        self.out, self.budget = out, budget
        self.cells = {c.id: load_cell(out, c.id) for c in cells}
        self.missing = [c.id for c in cells if self.cells[c.id] is None]
        self.stale = [c.id for c in cells if stale_settings(c, self.cells[c.id], settings)]
        self.paper = yaml.safe_load(PAPER.read_text())
        self.verdicts: list[tuple[str, str, str, str]] = []
        self.grid: dict[tuple[str, str], str] = {}   # (task, solver) → the main-table targets' verdicts

    def cell(self, task: str, solver: str, mode: str) -> dict | None:
        return self.cells.get(f"{task}/{solver}/{mode}")

    def target(self, claim: str, measured: str, ok: bool | None, why: str = "") -> str:
        self.verdicts.append((claim, measured, verdict(ok), why))
        return verdict(ok)

    # ------------------------------------------------------------------ main table
    def main_table(self, task: str) -> str:
        lines = [f"### {TASKS[task].label}", "",
                 "| method | PSNR | SSIM | LPIPS | FID | KID | NFE mean ± sd | n | paper PSNR / SSIM / LPIPS / FID / NFE |",
                 "|---|---|---|---|---|---|---|---|---|"]
        methods = [("none", "input"), ("none", "decode")] + [
            (s, m) for s in solver_names() if applicable(s, TASKS[task].family) for m in ("baseline", "equal_nfe", "flash")]
        for solver, mode in methods:
            c = self.cell(task, solver, mode)
            rows = ok_rows(c)
            paper = self.paper["rows"].get(f"{solver}/{mode}", {}).get(task)
            ptxt = " / ".join("–" if v is None else f"{v:g}" for v in paper) if paper else "–"
            if c is None:
                lines.append(f"| {method_label(solver, mode)} | not run yet | | | | | | | {ptxt} |")
                continue
            nfe = [r["nfe"] for r in rows]
            fid, kid = kid_text(c)
            lpips = mean(rows, "lpips")
            lines.append(f"| {method_label(solver, mode)} | {fmt(mean(rows, 'psnr'))} | {fmt(mean(rows, 'ssim'), 3)} | "
                         f"{fmt(lpips, 3) if lpips is not None else 'missing¹'} | {fid} | {kid} | "
                         f"{np.mean(nfe):.1f} ± {np.std(nfe):.1f} | {len(rows)} | {ptxt} |")
        notes = []
        for solver, mode in methods:
            st = (self.cell(task, solver, mode) or {}).get("settings")
            if st and solver != "none":  # D(ẑ) runs no solver step
                c = f", c = {st['noise_correction']:g}" if st.get("noise_correction") is not None else ""
                params = ", ".join(f"{k} = {v}" for k, v in sorted(st["params"].items())) or "defaults"
                notes.append(f"{method_label(solver, mode)}: {params}{c} ({'tuned' if st['tuned'] else 'built-in, not tuned'})")
        return "\n".join(lines) + ("\n\nSettings: " + "; ".join(notes) + ".\n" if notes else "\n")

    def main_verdicts(self, task: str) -> str:
        lines = ["| solver | NFE Flash / baseline (≤ 0.12) | PSNR Flash − baseline, same images (≥ +1 dB) | "
                 "KID and FID Flash vs baseline, same images | Flash − equal-NFE baseline | Flash − D(ẑ) |", "|---|---|---|---|---|---|"]
        for solver in solver_names():
            if not applicable(solver, TASKS[task].family):
                continue
            f, b, e = (self.cell(task, solver, m) for m in ("flash", "baseline", "equal_nfe"))
            if f is None or b is None:
                lines.append(f"| {solver} | not run yet | | | | |")
                self.grid[(task, solver)] = "not run yet"
                continue
            ratio = f["mean_nfe"] / b["mean_nfe"] if b["mean_nfe"] else None
            ddpm = SOLVERS[solver].reference_sampler == "ddpm"   # the NFE target is against DDPM-1000
            nfe_ok = None if not ddpm or ratio is None else ratio <= 0.12
            ci = paired(f, b)
            psnr_ok = None if ci is None else ci["mean"] >= 1.0
            fk, bk = ((c or {}).get("set_metrics", {}).get("grid", {}) for c in (f, b))
            kid_ok = fk["kid"] < bk["kid"] if "kid" in fk and "kid" in bk else None
            fid_ok = fk["fid"] < bk["fid"] if kid_ok is not None else None
            kid_txt = (f"KID {fk['kid']:.3f} vs {bk['kid']:.3f} {verdict(kid_ok)}, FID {fk['fid']:.0f} vs "
                       f"{bk['fid']:.0f} {verdict(fid_ok)} (n={fk['n']})"
                       if kid_ok is not None else "missing (n < 2 or no Inception weights) n/a")
            lines.append(f"| {solver} | {fmt(ratio, 3)} {verdict(nfe_ok)} | {ci_text(ci)} {verdict(psnr_ok)} | "
                         f"{kid_txt} | {ci_text(paired(f, e))} | "
                         f"{ci_text(paired(f, self.cell(task, 'none', 'decode')))} |")
            self.grid[(task, solver)] = " · ".join(
                ([f"NFE {verdict(nfe_ok)}"] if ddpm else [])
                + [f"PSNR {verdict(psnr_ok)}" + (f" ({ci['mean']:+.1f} dB)" if ci else ""), f"KID {verdict(kid_ok)}", f"FID {verdict(fid_ok)}"])
        return "\n".join(lines) + "\n"

    def solver_adds(self) -> str:
        """What the solver adds over decoding ẑ (the paper's AE row question)."""
        lines = ["| task | PSNR Flash(Latent-DPS) − D(ẑ) | LPIPS Flash − D(ẑ) | KID Flash | KID D(ẑ) |", "|---|---|---|---|---|"]
        for task in TASKS:
            f, d = self.cell(task, "ldps", "flash"), self.cell(task, "none", "decode")
            if f is None or d is None:
                lines.append(f"| {task} | not run yet | | | |")
                continue
            lp = paired(f, d, "lpips")
            lines.append(f"| {task} | {ci_text(paired(f, d))} | {ci_text(lp) if lp else 'missing¹'} | "
                         f"{kid_text(f)[1]} | {kid_text(d)[1]} |")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ adaptivity
    def adaptivity(self) -> tuple[str, dict]:
        task, starts = "blur_varying", self.budget.fixed_starts
        f = self.cell(task, "ldps", "flash")
        fixed = [(k, self.cell(task, "ldps", f"start-{k}")) for k in starts]
        fixed = [(k, c) for k, c in fixed if c is not None]
        if f is None or not fixed:
            self.target("Flash on or above the best fixed-start curve", "not run yet", None, "cells missing")
            return "Not run yet (cells blur_varying/ldps/start-K and blur_varying/ldps/flash).\n", {}
        keys = {r["key"] for r in ok_rows(fixed[0][1])}
        fr = ok_rows(f, keys)
        bins = list(BINS)
        lines = ["| start step K | mean NFE | PSNR | LPIPS | " + " | ".join(f"PSNR t∈{b}" for b in bins) + " |",
                 "|---" * (4 + len(bins)) + "|"]
        curve = []
        for k, c in fixed:
            rows = ok_rows(c)
            curve.append((mean(rows, "nfe"), mean(rows, "psnr"), mean(rows, "lpips")))
            lines.append(f"| {k} | {mean(rows, 'nfe'):.0f} | {fmt(mean(rows, 'psnr'))} | {fmt(mean(rows, 'lpips'), 3)} | "
                         + " | ".join(fmt(mean(in_bin(rows, b), "psnr")) for b in bins) + " |")
        lines.append(f"| **Flash** (adaptive) | {mean(fr, 'nfe'):.1f} | {fmt(mean(fr, 'psnr'))} | {fmt(mean(fr, 'lpips'), 3)} | "
                     + " | ".join(f"{fmt(mean(in_bin(fr, b), 'psnr'))} (NFE {mean(in_bin(fr, b), 'nfe') or 0:.0f})"
                                  for b in bins) + " |")
        nfe, psnr = zip(*[(a, b) for a, b, _ in sorted(curve)])
        at = float(np.interp(mean(fr, "nfe"), nfe, psnr))
        best = max(psnr)
        ok = mean(fr, "psnr") >= at
        text = "\n".join(lines) + (
            f"\n\nOn the same {len(fr)} images: Flash {mean(fr, 'psnr'):.2f} dB at mean NFE {mean(fr, 'nfe'):.1f}; the "
            f"fixed-start curve interpolated at that NFE gives {at:.2f} dB; the best fixed start overall {best:.2f} dB "
            f"(at NFE {nfe[int(np.argmax(psnr))]:.0f}).\n")
        best_k = [k for k, _ in fixed][int(np.argmax([p for _, p, _ in curve]))]
        self.target("Flash on or above the fixed-start curve at its NFE", f"{mean(fr, 'psnr'):.2f} vs {at:.2f} dB", ok,
                    f"best fixed start K = {best_k}: {best:.2f} dB")
        return text, {"curve": curve, "flash": (mean(fr, "nfe"), mean(fr, "psnr")), "starts": [k for k, _ in fixed],
                      "bins": {b: ([(mean(in_bin(ok_rows(c), b), "nfe"), mean(in_bin(ok_rows(c), b), "psnr"))
                                    for _, c in fixed], (mean(in_bin(fr, b), "nfe"), mean(in_bin(fr, b), "psnr")))
                               for b in bins}}

    # ------------------------------------------------------------------ robustness
    def robustness(self) -> tuple[str, dict]:
        lines = ["| test noise σ | input PSNR | Flash PSNR | Flash mean start t̂ | Flash NFE | baseline PSNR | "
                 "Flash PSNR on the baseline's images | n Flash / baseline |", "|---|---|---|---|---|---|---|---|"]
        series = {"sigma": [], "flash": [], "flash_sub": [], "baseline": [], "start": []}
        for s in self.budget.noises:
            t = noise_task(s).name
            f, b, i = self.cell(t, "ldps", "flash"), self.cell(t, "ldps", "baseline"), self.cell(t, "none", "input")
            if f is None or b is None:
                lines.append(f"| {s:g} | not run yet | | | | | | |")
                continue
            sub = ok_rows(f, {r["key"] for r in ok_rows(b)})
            vals = (mean(ok_rows(f), "psnr"), mean(sub, "psnr"), mean(ok_rows(b), "psnr"), mean(ok_rows(f), "start_step"))
            for name, v in zip(("flash", "flash_sub", "baseline", "start"), vals):
                series[name].append(v)
            series["sigma"].append(s)
            lines.append(f"| {s:g} | {fmt(mean(ok_rows(i), 'psnr'))} | {fmt(vals[0])} | {vals[3]:.0f} | "
                         f"{mean(ok_rows(f), 'nfe'):.1f} | {fmt(vals[2])} | {fmt(vals[1])} | {len(ok_rows(f))} / {len(ok_rows(b))} |")
        text = "\n".join(lines) + "\n"
        if len(series["sigma"]) >= 2:
            drop_f = series["flash_sub"][0] - series["flash_sub"][-1]
            drop_b = series["baseline"][0] - series["baseline"][-1]
            ok = drop_f < drop_b
            text += (f"\nPSNR drop from σ = {series['sigma'][0]:g} to {series['sigma'][-1]:g} on the same images: Flash "
                     f"{drop_f:.2f} dB, baseline {drop_b:.2f} dB.\n")
            self.target("Smaller PSNR drop than the baseline as σ grows", f"{drop_f:.2f} vs {drop_b:.2f} dB", ok,
                        f"baseline PSNR {min(series['baseline']):.2f}–{max(series['baseline']):.2f} dB over σ; "
                        f"Flash's mean start t̂ {series['start'][0]:.0f} → {series['start'][-1]:.0f}")
        else:
            self.target("Smaller PSNR drop than the baseline as σ grows", "not run yet", None, "cells missing")
        return text, series

    # ------------------------------------------------------------------ severity
    def severity(self) -> tuple[str, dict]:
        lines = ["| family (task) | Spearman ρ(σ̂², t) | pairwise ordering (σ̂² vs t) | n |", "|---|---|---|---|"]
        points = {}
        for task in ("blur_varying", "nonlinear_blur", "inpainting"):
            cell = self.cell(task, "ldps", "flash")
            rows = [r for r in ok_rows(cell) if r.get("sigma2_hat") is not None]
            if rows:
                points[task] = ([r["severity"] for r in rows], [r["sigma2_hat"] for r in rows])
            if len(rows) < 3:
                lines.append(f"| {task} | {'not run yet' if cell is None else 'too few images for ranks'} | | | {len(rows)} |")
                continue
            s2, t = [r["sigma2_hat"] for r in rows], [r["severity"] for r in rows]
            rho = spearman(s2, t)
            lines.append(f"| {TASKS[task].family} ({task}) | {rho:.3f} | {(1 + kendalltau(s2, t).statistic) / 2:.3f} | {len(rows)} |")
            if task == "blur_varying":
                self.target("σ̂² Spearman ≥ 0.8 (Gaussian blur)", f"{rho:.3f}", rho >= 0.8)
        text = "\n".join(lines) + "\n"
        d = [r for r in ok_rows(self.cell("blur_fixed", "none", "decode")) if r.get("sigma2_hat") is not None]
        if len(d) >= 3:
            s2, err = [r["sigma2_hat"] for r in d], [10 ** (-r["psnr"] / 10) for r in d]
            text += (f"\nAt fixed severity (blur_fixed, t = 1), per image: Pearson(σ̂², MSE of D(ẑ)) "
                     f"{pearson(s2, err):.3f}, Spearman {spearman(s2, err):.3f} (n={len(d)}): "
                     "with the severity fixed, σ̂² still has to say which images the encoder gets wrong.\n")
            points["fixed"] = (err, s2)
        return text, points


BINS = {"[0,⅓)": (0.0, 1 / 3), "[⅓,⅔)": (1 / 3, 2 / 3), "[⅔,1]": (2 / 3, 1.01)}   # severity t


def in_bin(rows: list[dict], b: str) -> list[dict]:
    lo, hi = BINS[b]
    return [r for r in rows if r.get("severity") is not None and lo <= r["severity"] < hi]
