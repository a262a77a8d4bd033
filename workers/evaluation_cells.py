"""Running the evaluation's cells: each one a restore job through `workers.execute` on its
task's shard, its results kept under the output folder and reused while its key matches.

Why here (workers/): a cell is a product job (the same backends, batching, resume) run
through `workers.execute`; what a cell is and how its results are stored and reported
lives in `pipeline.reproduction`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.corpus.degradation import degrade_samples
from pipeline.execution.config import load_config
from pipeline.io.outputs import OutputStore
from pipeline.io.samples import Sample
from pipeline.io.shards import iter_samples, write_shard
from pipeline.models.model_store import fingerprint, load_meta
from pipeline.operators import build_operator
from pipeline.quality.metrics import lpips_metric
from pipeline.reproduction.cell_store import (load_cell, reference_rows, save_cell, save_task,
                                            set_metrics)
from pipeline.reproduction.suite import Budget, Cell, Task, cell_key, cell_overrides, data_key, task_named
from pipeline.restoration.solver_settings import resolve, table_for, tuned

from .execute import execute

GRID = "grid"   # the subset the baselines restore and the sample grids show


@dataclass
class TaskData:
    task: Task
    url: str                      # the degraded shard
    key: str                      # data_key: protocol + crops + seed
    keys: list[str]               # every image, sorted by severity
    severity: dict[str, float]
    degraded: dict[str, torch.Tensor]
    clean: dict[str, torch.Tensor]
    grid: list[str]               # the baselines' images, which the sample grids show


def spread_keys(keys: list[str], n: int) -> list[str]:
    """n keys spread over a severity-sorted list (easy to hard), all when n ≥ len."""
    if n >= len(keys):
        return list(keys)
    return [keys[i] for i in sorted({int(i) for i in np.linspace(0, len(keys) - 1, n).round()})]


def portable_hash(cfg, family: str) -> str:
    """The config hash as a cell key needs it: model folders named by role, not by path (the
    model fingerprints enter the key beside it, so committed cells are reused from any
    checkout), and the tuned settings this cell resolves to instead of the whole table's
    hash (retuning one solver keeps every other solver's cells)."""
    c = copy.deepcopy(cfg)
    c.models.autoencoder, c.models.denoiser = "autoencoder", "ldm"
    c.models.severity = {f: f"severity-{f}" for f in c.models.severity}
    c.models.estimators = {}  # a cell's samples carry their parameters: no estimator runs
    if c.solver.settings is not None:
        params, nc = resolve(c.solver.name, family, c.flash.enabled, c.solver.params, c.flash.noise_correction,
                             table_for(c.solver.settings))
        c.solver.settings, c.solver.params, c.flash.noise_correction = None, params, nc
    return c.output_hash()


@dataclass
class Evaluation:
    """One evaluation's fixed inputs: models, crops, budget, where results and work go."""
    models: Path
    crops01: torch.Tensor
    crop_keys: list[str]
    budget: Budget
    out: Path
    work: Path
    seed: int = 0
    engine: str = "local"
    batch_size: int = 16
    device: str = "cpu"
    lpips_weights: str | None = None
    settings_table: str = "tuned"   # solver.settings of every cell: the shipped table or another prior's
    threads: int | None = None      # torch threads of the solver (None: the cores); keys ignore it
    command: str = ""
    log: Callable[[str], None] = print
    _data: dict = field(default_factory=dict)

    # --- models ---------------------------------------------------------------------
    def severity_url(self, family: str) -> str:
        return str(self.models / f"severity-{family}")

    def operator_params(self, family: str) -> dict:
        return dict(load_meta(self.severity_url(family)).get("operator_params", {}))

    def model_hashes(self, family: str, flash: bool) -> dict:
        """The models a cell's result depends on: a cell without Flash never loads the severity
        encoder, so retraining one leaves the baseline and equal-NFE cells valid."""
        names = ("autoencoder", "ldm") + ((f"severity-{family}",) if flash else ())
        return {name: fingerprint(str(self.models / name)) for name in names}

    def base_sets(self, family: str) -> list[str]:
        sets = [f"models.autoencoder={self.models / 'autoencoder'}", f"models.denoiser={self.models / 'ldm'}",
                f"models.device={self.device}", f"execution.engine={self.engine}",
                f"execution.batch_size={self.batch_size}", f"seed={self.seed}",
                f"solver.settings={self.settings_table}"]
        if self.threads:
            sets.append(f"execution.solver_threads={self.threads}")
        if self.lpips_weights:
            sets.append(f"metrics.lpips_weights={self.lpips_weights}")
        return sets

    # --- data -----------------------------------------------------------------------
    def data(self, task: Task) -> TaskData:
        """The task's degraded shard (written once per data key) and the grid's images."""
        if task.name in self._data:
            return self._data[task.name]
        overrides = {**self.operator_params(task.family), **task.overrides()}
        dk = data_key(task, self.crop_keys, self.seed, overrides)
        folder = self.work / "data" / f"{task.name}-{dk}"
        shard = folder / "degraded-000000.tar"
        if not (folder / "index.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            clean = [Sample(k, "", self.crops01[i], None, {"photo": k}, "") for i, k in enumerate(self.crop_keys)]
            rows = degrade_samples(clean, self.seed, [(task.family, 1.0)], task.severity, task.noise, overrides)
            write_shard(str(shard), rows)
            (folder / "index.json").write_text(json.dumps({"task": task.name, "data_key": dk}) + "\n")
        degraded, cleans, sev = {}, {}, {}
        for s in iter_samples(str(shard)):
            params = {k: v for k, v in s.params.items() if k != "provenance"}
            op = build_operator([params], [s.key])   # a small copy (downsample) at the restored size, as a job reads it
            lifted = op.lift(s.image01[None], op.restored_size(*s.image01.shape[-2:]))[0]
            degraded[s.key], cleans[s.key], sev[s.key] = lifted, s.clean01, float(s.params["severity"])
        keys = sorted(sev, key=lambda k: (sev[k], k))
        grid = spread_keys(keys, self.budget.n_baseline)
        data = TaskData(task, str(shard), dk, keys, sev, degraded, cleans, grid)
        save_task(self.out, task.name, {"task": task.name, "label": task.label, "family": task.family,
                                        "severity": list(task.severity), "noise": task.noise,
                                        "params": task.overrides(), "data_key": dk, "images": len(keys),
                                        GRID: grid, "severities": sev},
                  {k: degraded[k] for k in grid}, {k: cleans[k] for k in grid})
        self._data[task.name] = data
        return data

    # --- cells ----------------------------------------------------------------------
    def keys_for(self, cell: Cell, data: TaskData) -> list[str]:
        return spread_keys(data.keys, cell.n(self.budget))

    def config_for(self, cell: Cell, task: Task):
        flash_nfe = None
        if cell.mode == "equal_nfe":
            flash_nfe = self.run(Cell(cell.task, cell.solver, "flash"))["mean_nfe"]
        sets = self.base_sets(task.family) + cell_overrides(cell, task, self.budget, flash_nfe)
        if cell.mode == "equal_nfe":   # ζ tuned on a short schedule, when the table has it
            entry = tuned(cell.solver, task.family, "equal_nfe", table_for(self.settings_table))["params"]
            sets += [f"solver.params.{k}={v}" for k, v in entry.items()]
        cfg = load_config(None, sets)
        cfg.models.severity = {task.family: self.severity_url(task.family)}
        return cfg

    def run(self, cell: Cell, force: bool = False) -> dict:
        """The cell's record: stored when its key matches (unless `force`), else computed now."""
        task = task_named(cell.task)
        data = self.data(task)
        keys = self.keys_for(cell, data)
        if cell.mode == "input":
            cfg_hash, cfg = json.dumps({"input": True, "lpips": self.lpips_weights}), None
        else:
            cfg = self.config_for(cell, task)
            cfg_hash = portable_hash(cfg, task.family)
        models = self.model_hashes(task.family, cfg.flash.enabled) if cfg else {}
        key = cell_key(cfg_hash, models, data.key, len(keys))
        stored = load_cell(self.out, cell.id)
        if stored and stored.get("key") == key and not force:
            return stored
        self.log(f"cell {cell.id}: {len(keys)} images" + (" (results found under another key: recomputing)"
                                                          if stored else ""))
        t0 = time.time()
        clean = torch.stack([data.clean[k] for k in keys])
        if cfg is None:
            rows = reference_rows(keys, torch.stack([data.degraded[k] for k in keys]), clean, data.severity,
                                  task.family, task.noise, lpips_metric(self.lpips_weights))
            images, summary = {k: data.degraded[k] for k in keys}, {}
        else:
            rows, images, summary = self.restore(cfg, data, keys, key)
        ok = [r for r in rows if r["status"] == "ok"]
        restored = torch.stack([images[r["key"]] for r in ok]) if ok else clean[:0]
        ref = torch.stack([data.clean[r["key"]] for r in ok]) if ok else clean[:0]
        grid = set(data.grid)
        subset = [i for i, r in enumerate(ok) if r["key"] in grid]
        record = {"id": cell.id, "key": key, "task": task.name, "solver": cell.solver, "mode": cell.mode,
                  "n": len(keys), "ok": len(ok), "errors": len(rows) - len(ok), "data_key": data.key,
                  "config_hash": cfg_hash if cfg else None, "models": models,
                  "mean_nfe": float(np.mean([r["nfe"] for r in ok])) if ok else None,
                  "seconds": round(time.time() - t0, 1), "engine": self.engine, "command": self.command,
                  "sampler_steps": summary.get("sampler_steps"), "settings": self.settings(cell, task, cfg),
                  "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "set_metrics": set_metrics(restored, ref, {GRID: subset}, self.device)}
        save_cell(self.out, record, rows, {k: images[k] for k in grid if k in images})
        self.log(f"cell {cell.id}: done in {record['seconds']} s, mean NFE {record['mean_nfe']}")
        return load_cell(self.out, cell.id)

    @staticmethod
    def settings(cell: Cell, task: Task, cfg) -> dict | None:
        """The solver hyperparameters and c the cell ran with, and whether the tuned table had them."""
        if cfg is None:
            return None
        mode = "flash" if cfg.flash.enabled else "equal_nfe" if cell.mode == "equal_nfe" else "baseline"
        table = table_for(cfg.solver.settings)
        params, c = resolve(cfg.solver.name, task.family, cfg.flash.enabled, cfg.solver.params,
                            cfg.flash.noise_correction, table)
        return {"params": params, "noise_correction": c if cfg.flash.enabled else None,
                "tuned": bool(tuned(cfg.solver.name, task.family, mode, table).get("params"))}

    def restore(self, cfg, data: TaskData, keys: list[str], key: str):
        """The restore job for a cell. Its work folder is named by the cell key (which holds the
        task's data: tasks share crop keys, so a folder per config alone would hand one task's
        rows to another) and the job's own hash, so an interrupted cell resumes."""
        work = self.work / "cells" / f"{key}-{cfg.output_hash()}"
        wanted = set(keys)
        summary = execute(cfg, data.url, str(work), only=wanted)
        store = OutputStore(str(work))
        rows = [r for r in store.read_metrics().to_pylist() if r["key"] in wanted]
        images = {}
        for part in sorted((work / "images").glob("part-*.tar")):
            for s in iter_samples(str(part), allow_convert=True):
                if hasattr(s, "image01") and s.key in wanted:
                    images[s.key] = s.image01
        if not cfg.flash.enabled:  # the length of the schedule a baseline ran
            summary["sampler_steps"] = 1 + max((r["start_step"] for r in rows if r["status"] == "ok"), default=-1)
        return sorted(rows, key=lambda r: r["key"]), images, summary
