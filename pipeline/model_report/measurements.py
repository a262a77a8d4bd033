"""The measurements behind `flash-restore report-models`: autoencoder PSNR, severity sweeps,
LDM samples and FID, one Latent-DPS step, end to end Flash vs baseline.

Why in the library: the command is an entry point; these are measurements that tests,
`tune` and the report share. Every budget is an argument so the same code runs in seconds
on CPU (tests) and at full size on a GPU. A figure that cannot be measured is
`{"missing": reason}`, never guessed.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.corpus.crops import load_corpus_export
from pipeline.corpus.photos import REPO_ROOT
from pipeline.execution.config import load_config
from pipeline.execution.crop_restore import degrade_crops, degraded_samples, restore_samples
from pipeline.model_report.estimators import measure_estimator
from pipeline.model_report.figures import contact_sheet, scatter_plot, to_uint8
from pipeline.models.model_store import fingerprint, load_latent_diffusion, load_meta, load_model
from pipeline.quality.image_sets import image_set_distances
from pipeline.quality.metrics import psnr
from pipeline.quality.statistics import ordering_accuracy, paired_mean_ci, pearson, spearman
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler
from pipeline.sampling.seeding import generators, randn_per_sample
from pipeline.solvers import ACCOUNT_KEYS, make_solver
from pipeline.training.loop import load_frozen_autoencoder, machine_name



def families(models: Path) -> list[str]:
    """The registered operator families, in registry order, that have a `severity-<family>` folder under
    `models` to report on (a family registered after the models were trained has none yet)."""
    # lazy: imports torch; the CLI imports this module at start (--help stays fast)
    from pipeline.operators import OPERATORS

    return [f for f in OPERATORS if (Path(models) / f"severity-{f}").is_dir()]


def estimator_families(models: Path) -> list[str]:
    """The registered families with an `estimator-<family>` folder (blind parameter estimators)."""
    # lazy: imports torch; the CLI imports this module at start (--help stays fast)
    from pipeline.operators import OPERATORS

    return [f for f in OPERATORS if (Path(models) / f"estimator-{f}").is_dir()]


@dataclass
class ReportOptions:
    """The budgets of one report (the command's options)."""
    crops: int = 0
    fid_samples: int = 500
    sample_steps: int = 1000
    severity_crops: int = 64
    e2e_crops: int = 16
    baseline_crops: int = 2
    step_batch: int = 32
    step_repeats: int = 3
    step_size: float | None = None
    settings: str = "tuned"      # the solver settings table of the end-to-end runs (solver.settings)
    batch_size: int = 64
    sample_batch: int = 512
    seed: int = 0
    fid_from: str | None = None
    samples_out: str | None = None


def missing(reason: str) -> dict:
    return {"missing": reason}


def resolve_photos(photos: str) -> str:
    """`dev` / `train` name the committed corpus exports; anything else is a path or URL."""
    return str(REPO_ROOT / "data" / "corpus" / photos) if photos in ("dev", "train") else photos


def spread(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over 0..n_total−1 (all when n ≤ 0 or n ≥ n_total), covering every photo."""
    if n <= 0 or n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n).round()})


def load_eval_crops(url: str, size: int):
    """Clean crops (N,3,size,size) in [0,1]; resized with antialiasing when the models use another size."""
    arr, _, _ = load_corpus_export(url)
    if len(arr) == 0:
        raise ValueError(f"no crops in {url}")
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x


# ------------------------------------------------------------------ measurements

def measure_autoencoder(ae, crops01, device, batch: int) -> dict:
    """Mean PSNR of D0(E0(x)) against x on the dev crops ([0,1], clipped)."""
    vals = []
    with torch.no_grad():
        for chunk in crops01.split(batch):
            x = chunk.to(device) * 2 - 1
            rec = (ae.decode(ae.encode(x)).float().cpu() + 1) / 2
            vals.append(psnr(rec, chunk))
    p = torch.cat(vals)
    return {"psnr_db": float(p.mean()), "psnr_min_db": float(p.min()), "crops": len(p), "size": crops01.shape[-1]}


def measure_severity(encoder, ae, family: str, crops01, params: dict, device, seed: int, batch: int,
                     sampler, noise: float = 0.05) -> dict:
    """Ordering accuracy, Spearman/Pearson ρ(σ̂², t) and calibration against var(ẑ − z0) (method §2.3, §7).

    Each crop's ladder keeps one operator seed (kernel shape, mask field) for all its severities,
    so only the severity changes along it; the noise draw is per rung."""
    K = 10
    ts = np.linspace(0.0, 1.0, K)
    n = len(crops01)
    x01 = crops01.repeat_interleave(K, dim=0)
    t_all = np.tile(ts, n)
    s2, real = [], []
    with torch.no_grad():
        for i in range(0, len(x01), batch):
            xb = x01[i:i + batch]
            crop = np.arange(i, i + len(xb)) // K
            y, _, _ = degrade_crops(family, xb, t_all[i:i + batch], params, seed, f"sev-{family}-{i}",
                                    noise=noise, op_seeds=1000 + crop)
            z_hat, sig = encoder(y.to(device))
            z0 = ae.encode(xb.to(device) * 2 - 1)
            s2.append(sig.float().cpu())
            real.append((z_hat - z0).float().flatten(1).var(dim=1, unbiased=True).cpu())
    s2, real = torch.cat(s2).double().numpy(), torch.cat(real).double().numpy()
    k = sampler.start_index(torch.from_numpy(s2)).numpy()
    return {"ordering_accuracy": ordering_accuracy(s2.reshape(n, K), ts), "spearman": spearman(s2, t_all),
            "pearson": pearson(s2, t_all), "calibration_pearson": pearson(s2, real),
            # what a perfect predictor of the realised error would score on the same ladder
            "realised_ordering_accuracy": ordering_accuracy(real.reshape(n, K), ts),
            "realised_spearman": spearman(real, t_all),
            "sigma2_mean": float(s2.mean()), "sigma2_min": float(s2.min()), "sigma2_max": float(s2.max()),
            "realised_var_mean": float(real.mean()), "start_step_mean": float(k.mean()),
            "start_step_min": int(k.min()), "start_step_max": int(k.max()), "crops": n, "severities": K,
            "noise_sigma": noise,
            "operator_params": params, "_calibration": (real.tolist(), s2.tolist())}


def sample_ldm(ldm, n: int, steps: int, device, seed: int, batch: int):
    """n unconditional samples in [0,1]: DDPM over all T steps, or DDIM(η=1) with `steps` < T."""
    T = ldm.schedule.num_timesteps
    sampler = DDPMSampler(ldm.schedule) if steps >= T else DDIMSampler(ldm.schedule, steps, eta=1.0)
    dtype = next(ldm.unet.parameters()).dtype
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            keys = [f"uncond-{j:05d}" for j in range(i, min(n, i + batch))]
            gens = generators(seed, keys, "sampler")
            z = randn_per_sample(ldm.latent_shape, generators(seed, keys, "baseline_init"), dtype=dtype, device=device)
            for k in range(sampler.num_steps - 1, -1, -1):
                idx = torch.full((len(keys),), k, dtype=torch.long)
                z, _ = sampler.step(z, ldm.eps(z, sampler.timesteps(idx)), idx, gens)
            out.append(((ldm.autoencoder.decode(z).float() + 1) / 2).clamp(0, 1).cpu())
    return torch.cat(out), f"{sampler.name}-{sampler.num_steps}"


def measure_ldm(ldm, crops01, n: int, steps: int, device, seed: int, batch: int, doc_dir: Path,
                fid_from: str | None, samples_out: str | None, floor01=None) -> dict:
    """64-sample contact sheet (docs/ldm_samples.png), FID and KID of n samples against the dev
    crops, and the real-photo floor: n training crops scored the same way (`image_set_distances`)."""
    t0 = time.perf_counter()
    if fid_from:
        arr = np.load(fid_from)["samples"]
        samples, how = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0, f"from {fid_from}"
    else:
        samples, how = sample_ldm(ldm, max(n, 64), steps, device, seed, batch)
    seconds = time.perf_counter() - t0
    scale = max(1, 128 // samples.shape[-1])
    contact_sheet(samples[:64], cols=8, scale=scale).save(doc_dir / "ldm_samples.png")
    if samples_out:
        Path(samples_out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(samples_out, samples=to_uint8(samples))
    fake = samples[:n] if n > 1 else samples
    floor = floor01[spread(len(floor01), len(fake))] if floor01 is not None else None
    value = image_set_distances(fake, crops01, device, floor)
    if "missing" in value and samples_out:
        value["missing"] += f"; samples saved: rerun `report-models --only ldm --fid-from {samples_out}`"
    return {**({"fid": value} if "missing" in value else value), "fid_samples": len(fake), "fid_real": len(crops01),
            "sampler": how, "sampling_s": seconds, "sheet": "ldm_samples.png"}


def measure_step(ldm, crops01, params: dict, device, batch: int, repeats: int, step_size: float, seed: int) -> dict:
    """Wall time of one Latent-DPS reverse step (denoiser + decoder backprop) for a batch, median of repeats."""
    solver = make_solver("ldps", ldm, DDPMSampler(ldm.schedule), step_size=step_size)
    x = crops01[torch.arange(batch) % len(crops01)]
    y, op, keys = degrade_crops("gaussian_blur", x, [0.5] * batch, params, seed, "step")
    dtype = next(ldm.unet.parameters()).dtype
    y = y.to(device, dtype)
    z = randn_per_sample(ldm.latent_shape, generators(seed, keys, "baseline_init"), dtype=dtype, device=device)
    k = ldm.schedule.num_timesteps // 2
    times = []
    for r in range(repeats + 1):  # the first is a warm-up
        count = {key: torch.zeros(batch, dtype=torch.long) for key in ACCOUNT_KEYS}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        solver.reverse_step(z, k, y, op, generators(seed, keys, "sampler"), count)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r:
            times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "batch": batch, "repeats": repeats, "device": str(device)}


def measure_e2e(models: Path, crops01, params: dict, device, seed: int, n: int, n_base: int,
                step_size: float, batch: int, settings: str = "tuned") -> dict:
    """Flash(Latent-DPS) vs the full-schedule Latent-DPS baseline through the in-process `Restorer`."""
    idx = spread(len(crops01), n)
    samples = degraded_samples("gaussian_blur", crops01[idx], np.linspace(0.0, 1.0, len(idx)), params, seed, "e2e")
    sets = [f"models.autoencoder={models / 'autoencoder'}", f"models.denoiser={models / 'ldm'}", f"models.device={device}",
            "execution.engine=local", f"execution.batch_size={batch}", f"seed={seed}", f"solver.settings={settings}"]
    if step_size is not None:
        sets.append(f"solver.params.step_size={step_size}")

    def run(flash: bool, chosen: list[int]) -> list[dict]:
        cfg = load_config(None, sets + [f"flash.enabled={str(flash).lower()}"])
        cfg.models.severity = {"gaussian_blur": str(models / "severity-gaussian_blur")}  # the only one used here
        return restore_samples(cfg, [samples[i] for i in chosen], batch)

    t0 = time.perf_counter()
    flash = run(True, list(range(len(samples))))
    t_flash = time.perf_counter() - t0
    base_idx = spread(len(samples), n_base) if n_base > 0 else []
    t0 = time.perf_counter()
    base = run(False, base_idx) if base_idx else []
    t_base = time.perf_counter() - t0
    mean = lambda rows, k: float(np.mean([row[k] for row in rows])) if rows else None  # noqa: E731
    sub = [flash[i] for i in base_idx]
    gain = paired_mean_ci([r["psnr"] for r in flash], [r["psnr_input"] for r in flash]) if len(flash) > 1 else None
    return {"flash_gain_db": gain, "crops": len(flash), "flash_mean_nfe": mean(flash, "nfe"), "flash_psnr_db": mean(flash, "psnr"),
            "input_psnr_db": mean(flash, "psnr_input"), "flash_seconds": t_flash,
            "flash_colour_shift": mean(flash, "colour_shift"), "input_colour_shift": mean(flash, "colour_shift_input"),
            "baseline_crops": len(base), "baseline_mean_nfe": mean(base, "nfe") if base else missing("--baseline-crops 0"),
            "baseline_psnr_db": mean(base, "psnr") if base else missing("--baseline-crops 0"),
            "flash_psnr_on_baseline_crops_db": mean(sub, "psnr") if sub else None, "baseline_seconds": t_base,
            "step_size": step_size if step_size is not None else "tuned settings",
            **({} if settings == "tuned" else {"settings_table": settings}),
            "severities": "linspace(0,1,n), noise 0.05"}


def model_info(models: Path) -> dict:
    out = {}
    for name in ("autoencoder", "ldm", *(f"severity-{f}" for f in families(models)),
                 *(f"estimator-{f}" for f in estimator_families(models))):
        path = models / name
        if not (path / "config.json").exists():
            out[name] = {"path": str(path), "missing": "no config.json"}
            continue
        meta = load_meta(str(path))
        out[name] = {"path": str(path), "fingerprint": fingerprint(str(path)),
                     "training_steps": meta.get("training_steps", "")}
    return out


def guard(figures: dict, name: str, fn):
    """Run one measurement; a failure becomes a `missing` figure with the reason (the report goes on).

    Weights that are there but do not load (BrokenWeights) stop the report instead: a broken
    install is to be fixed, not reported as a figure nobody could measure.
    """
    from pipeline.quality.metrics import BrokenWeights  # lazy: torch-heavy, loaded when a measurement runs

    try:
        figures[name] = fn()
    except BrokenWeights:
        raise
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        figures[name] = missing(f"{type(exc).__name__}: {exc}")

def load_models(root: Path, device):
    """(LatentDiffusion or None, Autoencoder or None, why not): what of `root` loads."""
    try:
        ldm = load_latent_diffusion(str(root / "autoencoder"), str(root / "ldm"), device=device)
        return ldm, ldm.autoencoder, ""
    except (ValueError, OSError) as exc:
        why = f"models not loadable: {exc}"
    try:
        ae, _ = load_frozen_autoencoder(str(root / "autoencoder"), device)
        return None, ae, why
    except (ValueError, OSError) as exc:
        return None, None, f"autoencoder not loadable: {exc}"


def measure_sections(root: Path, photos_url: str, wanted: set, figures: dict, dev, opts: ReportOptions,
                     doc_dir: Path) -> dict:
    """Measure the `wanted` sections of the models under `root` into `figures` (others kept)."""
    figures = dict(figures)
    ldm, ae, ae_err = load_models(root, dev)
    size = int(ae.model.config.sample_size) if ae is not None else 64
    crops01 = load_eval_crops(photos_url, size)
    crops01 = crops01[spread(len(crops01), opts.crops)]
    gparams = load_meta(str(root / "severity-gaussian_blur")).get("operator_params", {}) \
        if (root / "severity-gaussian_blur" / "config.json").exists() else {}
    with torch.no_grad():
        if "autoencoder" in wanted:
            guard(figures, "autoencoder", (lambda: measure_autoencoder(ae, crops01, dev, opts.batch_size))
                  if ae is not None else (lambda: missing(ae_err)))
    if "severity" in wanted:
        sev = {}
        sampler = DDPMSampler(ldm.schedule) if ldm is not None else None
        sev_crops = crops01[spread(len(crops01), opts.severity_crops)]
        for fam in families(root):
            url = root / f"severity-{fam}"

            def one(url=url, fam=fam):
                if ae is None or sampler is None:
                    return missing("autoencoder or LDM not loadable")
                enc, meta = load_model(str(url), device=dev, return_meta=True)
                return measure_severity(enc.float(), ae, fam, sev_crops, meta.get("operator_params", {}), dev,
                                        opts.seed, opts.batch_size, sampler, meta.get("noise_sigma", 0.05))
            guard(sev, fam, one)
        calib = {f: s.pop("_calibration") for f, s in sev.items() if "_calibration" in s}
        if calib:
            scatter_plot(calib, "severity encoders: predicted vs realised latent error variance",
                         "realised var(z_hat - z0) per image", "predicted sigma2_hat").save(
                doc_dir / "severity_calibration.png")
        figures["severity"] = sev
    if "estimator" in wanted:
        est = {}
        for fam in estimator_families(root):
            def read(fam=fam):
                model, meta = load_model(str(root / f"estimator-{fam}"), device=dev, return_meta=True)
                return measure_estimator(model.float(), fam, crops01[spread(len(crops01), opts.severity_crops)],
                                         meta.get("operator_params", {}), opts.seed)
            guard(est, fam, read)
        figures["estimator"] = est
    if ldm is None:
        for name in ("ldm", "step", "e2e"):
            if name in wanted:
                figures[name] = missing(ae_err)
    else:
        if "ldm" in wanted:
            guard(figures, "ldm", lambda: measure_ldm(ldm, crops01, opts.fid_samples, opts.sample_steps, dev, opts.seed,
                                                       opts.sample_batch, doc_dir, opts.fid_from, opts.samples_out,
                                                       load_eval_crops(resolve_photos("train"), size)))
        if "step" in wanted:
            steps = dict(figures.get("step") or {}) if "missing" not in (figures.get("step") or {}) else {}
            label = machine_name(dev)
            guard(steps, label, lambda: measure_step(ldm, crops01, gparams, dev, opts.step_batch, opts.step_repeats,
                                                     opts.step_size or 1.0, opts.seed))
            figures["step"] = steps
        if "e2e" in wanted:
            guard(figures, "e2e", lambda: measure_e2e(root, crops01, gparams, dev, opts.seed, opts.e2e_crops,
                                                      opts.baseline_crops, opts.step_size, opts.batch_size,
                                                      opts.settings))
    return figures
