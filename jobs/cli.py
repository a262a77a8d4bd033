"""The `flash-restore` command line. Each command lives in its own module; this file only registers them."""
from __future__ import annotations

import typer

from jobs import bench_any_size_cmd, bench_blind_cmd, bench_cmd, bench_photo_families_cmd, bench_mixed_size_cmd, bench_estimate_cmd, bench_scale_cmd, calibrate_cmd, corpus, estimate_cmd, evaluate_cmd, inspect_cmd, reprocess_cmd, restore_cmd, submit_cmd, tune_cmd
from jobs import train
from jobs import report_models

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dataset-scale image restoration with severity-adaptive latent diffusion.")

# --- command registry: one line per command -------------------------------------------
# (modules are imported lazily inside their functions so `--help` stays fast)
app.command("restore")(restore_cmd.restore)
app.command("demo")(restore_cmd.demo)
app.command("estimate")(estimate_cmd.estimate)
app.command("inspect")(inspect_cmd.inspect)
app.command("reprocess")(reprocess_cmd.reprocess)
app.command("merge")(reprocess_cmd.merge)
bench_cmd.bench_app.command("calibrate")(calibrate_cmd.calibrate)
bench_cmd.bench_app.command("estimate")(bench_estimate_cmd.bench_estimate)
bench_cmd.bench_app.command("budget")(bench_estimate_cmd.bench_budget)
bench_cmd.bench_app.command("scale")(bench_scale_cmd.bench_scale)
bench_cmd.bench_app.command("any-size")(bench_any_size_cmd.bench_any_size)
bench_cmd.bench_app.command("mixed-size")(bench_mixed_size_cmd.bench_mixed_size)
bench_cmd.bench_app.command("blind")(bench_blind_cmd.bench_blind)
bench_cmd.bench_app.command("photo-families")(bench_photo_families_cmd.bench_photo_families)
app.add_typer(bench_cmd.bench_app, name="bench")
app.command("train-autoencoder")(train.train_autoencoder)
app.command("train-ldm")(train.train_ldm)
app.command("train-severity")(train.train_severity)
app.command("train-estimator")(train.train_estimator)
app.command("make-shards")(corpus.make_shards)
app.command("degrade")(corpus.degrade)
app.command("export-corpus")(corpus.export_corpus)
app.command("report-models")(report_models.report_models)
app.command("tune")(tune_cmd.tune)
app.command("tune-merge")(tune_cmd.tune_merge)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(submit_cmd.submit)
app.add_typer(submit_cmd.job_app, name="job")

if __name__ == "__main__":
    app()
