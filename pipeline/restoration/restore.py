"""In-process restoration: what a severity stage and a solver stage run, without Ray.

`Restorer` loads the models once, estimates severity in batches (`estimate`: ẑ, σ̂², start
step) and restores one exact, staggered batch (`solve`) into output rows. It is built from
the sections it needs (models, solver, flash; `pipeline.restoration.options`) and a few
values, not from a job's config, so it sits below the job machinery; a job builds it with
`pipeline.execution.restorer.build_restorer`. The stage functions (`pipeline.execution.stages`)
call it in whichever backend runs them, so outputs are the same for the same seeds.
"""
from __future__ import annotations

import json
import time
from typing import Any

import torch

from pipeline.io.outputs import error_for
from pipeline.io.samples import encode_png
from pipeline.models.model_store import fingerprint, load_latent_diffusion, load_model
from pipeline.models.pipeline_folder import autoencoder_fingerprint
from pipeline.operators import OPERATORS, build_operator
from pipeline.operators.noise import to_unit_domain
from pipeline.quality import metrics
from pipeline.quality.blocking import BLOCK, blocking_ratio
from pipeline.quality.no_reference import residuals, severity_ood
from pipeline.restoration.blind_estimate import ParameterEstimators
from pipeline.restoration.flash import Flash
from pipeline.restoration.items import Estimated, Prepared
from pipeline.restoration.options import FlashConfig, ModelsConfig, SolverConfig
from pipeline.restoration.region_starts import tile_starts
from pipeline.restoration.solver_settings import resolve, sampler_of, table_for
from pipeline.restoration.whole_photo import decode_whole, estimate_whole, native_size, restore_whole
from pipeline.sampling.schedules import make_sampler
from pipeline.sampling.tiles import Tiling, canvas_size
from pipeline.solvers import default_sampler, make_solver


def capped_start(start: int, max_nfe: int | None) -> int:
    """flash.max_nfe: start no higher than max_nfe − 1, so at most max_nfe denoiser steps."""
    return start if max_nfe is None else min(start, max_nfe - 1)


def isolating(run, items: list, on_error) -> list:
    """`run(items)`; if that raises, each item is run alone and a failing one is replaced, in
    place, by `on_error(item, exc)`: one bad sample costs its own row, not its batch's."""
    try:
        return run(items)
    except Exception:  # noqa: BLE001 - isolate the bad sample; the job goes on
        out = []
        for item in items:
            try:
                out += run([item])
            except Exception as exc:  # noqa: BLE001 - becomes an error row
                out.append(on_error(item, exc))
        return out


def named_sampler(schedule, name: str, steps: int | None, eta: float | None):
    """A sampler by name; steps and eta as given, the sampler's own defaults where None."""
    kwargs = {k: v for k, v in (("num_steps", steps), ("eta", eta)) if v is not None}
    return make_sampler(name, schedule, **kwargs)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Restorer:
    """Models loaded once; severity and solve on batches; rows for the metrics table."""

    def __init__(self, models: ModelsConfig, solver: SolverConfig, flash: FlashConfig, *, seed: int = 0,
                 config_hash: str = "", lpips_weights: str | None = None, batch_size: int = 8,
                 device: str | torch.device | None = None):
        """`config_hash` is written into every row (the job's output hash); `batch_size` bounds a
        severity batch; `lpips_weights` enable LPIPS (else reported missing)."""
        self.models_cfg, self.solver_cfg, self.flash_cfg = models, solver, flash
        self.seed, self.config_hash, self.batch_size = seed, config_hash, batch_size
        self.device = pick_device(str(device or models.device))
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[models.dtype]
        self.ldm = load_latent_diffusion(models.autoencoder, models.denoiser, device=self.device, dtype=self.dtype)
        try:   # the canvas tiles of photos off the prior's size: fails before any compute
            self.tiling = Tiling(self.ldm.latent_shape[1], flash.tiling, flash.tile_overlap)
        except ValueError as exc:
            raise ValueError(f"flash.tiling / flash.tile_overlap: {exc}") from None
        sc = solver
        if sc.sampler:
            sampler = named_sampler(self.ldm.schedule, sc.sampler, sc.steps, sc.eta)
        else:
            sampler = default_sampler(sc.name, self.ldm.schedule)
        self.sampler = sampler
        self.solver = make_solver(sc.name, self.ldm, sampler, **sc.params)
        self._flash: dict[str, Flash] = {}
        self._sigma2_train: dict[str, dict | None] = {}
        self._lpips = metrics.lpips_metric(lpips_weights)
        self.estimators = ParameterEstimators(models.estimators, self.device, self.dtype)
        self.ae_fingerprint = autoencoder_fingerprint(models.autoencoder)  # a pipeline folder: its vqvae/
        self.model_hash = "+".join([self.ae_fingerprint, fingerprint(models.denoiser)])
        self._family_hash: dict[str, str] = {}
        if flash.start_step is not None and flash.start_step >= sampler.num_steps:
            raise ValueError(f"flash.start_step={flash.start_step} is off the {sc.name} sampler's grid "
                             f"(0..{sampler.num_steps - 1})")
        for family in (models.severity if flash.enabled else ()):
            self.flash_for(family)  # load every encoder now: a mismatched model fails before any compute

    def sampler_for(self, solver: str, family: str):
        """The sampler `solver` runs on `family` in this job: the job's `solver.sampler` where it names
        one, else the settings table entry's (`sampler_of`), else the solver's own. `estimate` prices
        other solvers with it too, so a family restored on a short DDIM path is priced on that path."""
        sc = self.solver_cfg
        own = None if sc.sampler else sampler_of(solver, family, self.flash_cfg.enabled, table_for(sc.settings))
        if own is None:
            return self.sampler if solver == sc.name else default_sampler(solver, self.ldm.schedule)
        T = self.ldm.schedule.num_timesteps   # the table's grid, no finer than the prior's
        return named_sampler(self.ldm.schedule, own["name"], min(own["steps"], T) if "steps" in own else None,
                             own.get("eta"))

    # --- stage 1: severity ---------------------------------------------------------
    def flash_for(self, family: str) -> Flash:
        if family not in self._flash:
            encoder = None
            if self.flash_cfg.enabled:
                url = self.models_cfg.severity[family]
                encoder, meta = load_model(url, device=self.device, dtype=self.dtype, return_meta=True)
                trained_on = meta.get("autoencoder_fingerprint")
                if trained_on and trained_on != self.ae_fingerprint:
                    raise ValueError(f"severity encoder {url} was trained on autoencoder {trained_on}, but the job "
                                     f"uses {self.models_cfg.autoencoder} ({self.ae_fingerprint})")
                encoder.eval()
                self._sigma2_train[family] = meta.get("sigma2_train")
            self._family_hash[family] = self.model_hash + (
                f"+{fingerprint(self.models_cfg.severity[family])}" if encoder is not None else "")
            sc = self.solver_cfg
            params, c = resolve(sc.name, family, self.flash_cfg.enabled, sc.params, self.flash_cfg.noise_correction,
                                table_for(sc.settings), untuned=sc.untuned)
            solver = make_solver(sc.name, self.ldm, self.sampler_for(sc.name, family), **params)
            self._flash[family] = Flash(encoder, solver, c, self.flash_cfg.init)
        return self._flash[family]

    def estimate(self, items: list[Prepared]) -> list[Estimated]:
        """σ̂² and start step per sample, in batches of one group; the baseline starts at K−1. A blind
        sample's pending parameters are estimated first (`ParameterEstimators.fill`)."""
        self.estimators.fill(items)
        out: dict[str, Estimated] = {}
        groups: dict[tuple, list[Prepared]] = {}
        for p in items:
            groups.setdefault(p.group, []).append(p)
        bs = self.batch_size
        for group, members in groups.items():
            for i in range(0, len(members), bs):
                chunk = members[i:i + bs]
                t0 = time.perf_counter()
                if not self.flash_cfg.enabled:
                    k_full = self.solver.sampler.num_steps - 1
                    for p in chunk:
                        out[p.key] = self._priced(Estimated(p, None, float("nan"), k_full, 0.0))
                    continue
                y = torch.stack([p.y for p in chunk]).to(self.device, self.dtype)
                flash = self.flash_for(group[0])
                starts = "image" if self.flash_cfg.start_step is not None else self.flash_cfg.starts
                z_hat, sigma2, k, regions = (flash.estimate(y) + (None,) if self.native(group[1])
                                             else estimate_whole(flash, y, starts, self.tiling, self.flash_cfg.statistics))
                dt = (time.perf_counter() - t0) / len(chunk)
                for j, p in enumerate(chunk):
                    out[p.key] = self._priced(self._capped(Estimated(
                        p, z_hat[j].detach().cpu(), float(sigma2[j]), self._start(int(k[j])), dt,
                        region_sigma2=None if regions is None else regions[j])))
        return [out[p.key] for p in items]

    def native(self, shape: tuple) -> bool:
        """Whether a sample of this (H, W) is the prior's own size: the crop path, else the whole-photo path."""
        return tuple(shape) == native_size(self.ldm)

    def _start(self, k: int) -> int:
        """The encoder's start index, or the configured fixed one (flash.start_step), or −1 (flash.decode_only)."""
        fl = self.flash_cfg
        return -1 if fl.decode_only else k if fl.start_step is None else fl.start_step

    def _priced(self, e: Estimated) -> Estimated:
        """The sample's tile count and predicted tile-steps (what its solve will cost)."""
        h, w = e.prepared.y.shape[-2:]
        if not self.native((h, w)):
            f, T = self.ldm.autoencoder.downsample, self.ldm.latent_shape[1]
            ch, cw = canvas_size(h, w, f, T)
            e.tiles = self.tiling.layout(ch // f, cw // f).num_tiles
        mode = "image" if self.flash_cfg.start_step is not None else self.flash_cfg.starts
        sampler = self.flash_for(e.prepared.params["operator"]).solver.sampler   # the family's grid
        e.tile_steps = sum(s + 1 for s in tile_starts(sampler, e.region_sigma2, e.tiles, mode, e.start_step))
        return e

    def _capped(self, e: Estimated) -> Estimated:
        """flash.max_nfe: remember what the cap cut."""
        start = capped_start(e.start_step, self.flash_cfg.max_nfe)
        if start != e.start_step:
            e.nfe_uncapped, e.start_step = e.start_step + 1, start
        return e

    # --- stage 2: one exact, staggered batch -----------------------------------------
    def solve(self, batch: list[Estimated]) -> list[tuple[dict, bytes | None, dict | None]]:
        """Restore one batch (one group) and return (row, png, image json) per sample."""
        if len({e.prepared.group for e in batch}) != 1:
            raise ValueError(f"solve: a batch must hold one operator family and size, got keys {[e.key for e in batch]}")
        family = batch[0].prepared.params["operator"]
        keys = [e.key for e in batch]
        flash = self.flash_for(family)
        y = torch.stack([e.prepared.y for e in batch]).to(self.device, self.dtype)
        op = build_operator([e.prepared.params for e in batch], keys).observing(to_unit_domain(y))
        t0 = time.perf_counter()
        res = (self._solve_native if self.native(y.shape[-2:]) else self._solve_whole)(flash, batch, y, op, keys)
        seconds = (time.perf_counter() - t0) / len(batch)
        x01 = to_unit_domain(res.x.detach().float().cpu()).clamp(0, 1)
        written = (x01 * 255).round() / 255  # what the PNG holds
        r, rz = residuals(to_unit_domain(y.float().cpu()), written, op, op.noise_sigmas)
        return [self._row(e, x01[i], res, i, seconds, {"residual": float(r[i]), "residual_z": float(rz[i])})
                for i, e in enumerate(batch)]

    def _estimate_of(self, batch: list[Estimated]):
        """(ẑ, noise level, start) of a batch; a fixed start takes the noise its own step implies."""
        z_hat = torch.stack([e.z_hat for e in batch]).to(self.device, self.dtype)
        sigma2 = torch.tensor([e.sigma2 for e in batch], dtype=torch.float64)
        k = torch.tensor([e.start_step for e in batch], dtype=torch.long)
        sampler = self.flash_for(batch[0].prepared.params["operator"]).solver.sampler
        level = sigma2 if self.flash_cfg.start_step is None else sampler.noise_level(k).double()
        return z_hat, sigma2, level, k

    def _solve_native(self, flash: Flash, batch: list[Estimated], y, op, keys):
        """Today's path at the prior's own size: `Flash` on the batch."""
        if not self.flash_cfg.enabled:
            return flash.baseline(y, op, keys, self.seed)
        z_hat, sigma2, level, k = self._estimate_of(batch)
        if self.flash_cfg.decode_only:
            return flash.decode(z_hat, sigma2)
        return flash.restore(y, op, keys, self.seed, estimate=(z_hat, level, k))

    def _solve_whole(self, flash: Flash, batch: list[Estimated], y, op, keys):
        """Any other size: the canvas loop on the whole photo (`pipeline.restoration.whole_photo`)."""
        if not self.flash_cfg.enabled:
            k = torch.full((len(batch),), self.sampler.num_steps - 1, dtype=torch.long)
            return restore_whole(flash, y, op, keys, self.seed, None, None, k, self.tiling,
                                 statistics=self.flash_cfg.statistics)
        z_hat, _, level, k = self._estimate_of(batch)
        if self.flash_cfg.decode_only:
            return decode_whole(flash, z_hat, y.shape[-2], y.shape[-1], self.tiling, self.flash_cfg.statistics)
        regions = [e.region_sigma2 for e in batch]
        if self.flash_cfg.start_step is not None or any(r is None for r in regions):
            return restore_whole(flash, y, op, keys, self.seed, z_hat, level, k, self.tiling,
                                 statistics=self.flash_cfg.statistics)
        return restore_whole(flash, y, op, keys, self.seed, z_hat, level, k, self.tiling, starts=self.flash_cfg.starts,
                             per_region=torch.stack(regions), statistics=self.flash_cfg.statistics)

    def solve_isolating(self, batch: list[Estimated]) -> list[tuple[dict, bytes | None, dict | None]]:
        """`solve`, but only the bad sample of a failing batch becomes an error row."""
        return isolating(self.solve, batch, lambda e, exc: (error_for(e.key, e.prepared.shard, exc), None, None))

    def _row(self, e: Estimated, x01: torch.Tensor, res, i: int, seconds: float, no_reference: dict):
        p = e.prepared
        row: dict[str, Any] = {
            "key": p.key, "shard": p.shard, "status": "ok", "error": None, "error_kind": None,
            "operator": p.params["operator"], "severity": p.params.get("severity"),
            "noise_sigma": p.params.get("noise_sigma"),
            "estimated": json.dumps(p.estimated, sort_keys=True) if p.estimated else None,
            "sigma2_hat": None if e.sigma2 != e.sigma2 else e.sigma2, "start_step": int(res.start_index[i]),
            "nfe": int(res.nfe[i]), "height": int(x01.shape[-2]), "width": int(x01.shape[-1]),
            "tiles": getattr(res, "tiles", 1),
            "tile_steps": int(res.tile_steps[i]) if hasattr(res, "tile_steps") else int(res.nfe[i]),
            "solver": self.solver_cfg.name, "flash": bool(self.flash_cfg.enabled),
            "seconds_severity": e.seconds_severity, "seconds_solve": seconds, "seed": self.seed,
            "input_sha256": p.input_sha256, "config_hash": self.config_hash,
            "model_hash": self._family_hash[p.params["operator"]],
        }
        for name, counts in res.account.items():  # every counter lands in its column (rows_to_table checks)
            row[name] = int(counts[i])
        row.update(no_reference)
        row["budget_action"] = f"nfe_capped_from_{e.nfe_uncapped}" if e.nfe_uncapped else "none"
        missing = []
        q = self._sigma2_train.get(p.params["operator"])
        if e.sigma2 != e.sigma2:
            missing.append("severity_ood: no severity estimate (baseline)")
        elif not q:
            missing.append("severity_ood: the severity encoder records no training range (sigma2_train)")
        else:
            row["severity_ood"] = severity_ood(e.sigma2, q)
        quality = self.quality(x01, p)
        missing += [quality.pop("metrics_missing")] if "metrics_missing" in quality else []
        row.update(quality)
        if missing:
            row["metrics_missing"] = "; ".join(missing)
        meta = {k: row[k] for k in ("key", "sigma2_hat", "start_step", "nfe", "solver", "flash", "config_hash")}
        if getattr(res, "start_maps", None):   # photos off the prior's size: where the steps went
            meta["start_map"] = res.start_maps[i]
        return row, encode_png(x01), meta

    def quality(self, x01: torch.Tensor, p: Prepared) -> dict:
        """PSNR/SSIM/LPIPS against the reference; null with a reason when they cannot be computed."""
        if p.clean01 is None:
            return {"metrics_missing": "no reference image (<key>.clean.png)"}
        clean = p.clean01.float().unsqueeze(0)
        if clean.shape[-2:] != x01.shape[-2:]:
            return {"metrics_missing": f"reference size {tuple(clean.shape[-2:])} != output {tuple(x01.shape[-2:])}"}
        out = {"psnr": float(metrics.psnr(x01[None], clean)[0]), "ssim": float(metrics.ssim(x01[None], clean)[0]),
               "psnr_input": float(metrics.psnr(to_unit_domain(p.y)[None].clamp(0, 1), clean)[0]),
               "colour_shift": float(metrics.colour_shift(x01[None], clean)[0]),
               "colour_shift_input": float(metrics.colour_shift(to_unit_domain(p.y)[None].clamp(0, 1), clean)[0])}
        if OPERATORS[p.params["operator"]].blocky and min(clean.shape[-2:]) > BLOCK:
            out["blocking"] = float(blocking_ratio(x01[None], clean)[0])
            out["blocking_input"] = float(blocking_ratio(to_unit_domain(p.y)[None].clamp(0, 1), clean)[0])
        if isinstance(self._lpips, metrics.Missing):
            out["metrics_missing"] = f"lpips: {self._lpips.reason}"
        else:
            out["lpips"] = float(self._lpips(x01[None].to(self.device), clean.to(self.device))[0])
        return out
