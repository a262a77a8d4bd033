"""`flash-restore reprocess` (redo the selected rows of an output) and `flash-restore merge`
(one row per key across outputs); see `pipeline.execution.reprocessing`."""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console

from jobs.restore_cmd import finish

console = Console()


def reprocess(
    source: str = typer.Option(..., "--from", help="A finished restore output"),
    where: str = typer.Option(..., "--where", help="Predicate over its metrics columns, e.g. \"status = 'error'\""),
    output: str = typer.Option(..., "--output", help="Where the new rows go (a new output)"),
    config: Optional[str] = typer.Option(None, "--config", help="Config file (default: the source's _config.yaml)"),
    solver: Optional[str] = typer.Option(None, "--solver"),
    engine: Optional[str] = typer.Option(None, "--engine", help="ray | local"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Config override section.key=value (repeatable)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Re-run only the samples of an output that match --where, recording lineage per row."""
    from pipeline.execution.config import load_config
    from pipeline.io.outputs import OutputStore
    from pipeline.execution.reprocessing import plan_reprocess
    from workers.execute import execute

    try:
        base = config or OutputStore(source).public_url("_config.yaml")
        sets = list(set_ or []) + [f"solver.name={solver}"] * bool(solver) + [f"execution.engine={engine}"] * bool(engine)
        cfg = load_config(base, sets)
        plan = plan_reprocess(source, where, cfg)
        console.print(f"reprocessing {len(plan.keys)} rows of {source} (from {len(plan.shards)} shards) → {output}")
        summary = execute(cfg, plan.shards, output, overwrite, only=plan.wants, lineage=plan.lineage)
        not_redone = plan.not_redone(set(OutputStore(output).read_metrics().column("key").to_pylist()))
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    for key, why in not_redone.items():
        console.print(f"[yellow]not redone:[/yellow] {key}: {why}")
    finish(cfg, summary, output)


def merge(
    outputs: List[str] = typer.Argument(..., help="Restore outputs (or views' sources), in order"),
    output: str = typer.Option(..., "--output", help="The view folder"),
    rule: str = typer.Option("best", "--rule", help="best (ok, then lowest residual_z, then newest) | newest"),
):
    """Write a view with exactly one row per key across outputs (VIEW/view.parquet + _view.json)."""
    import json

    import pyarrow.parquet as pq

    from pipeline.io.outputs import OutputStore
    from pipeline.execution.reprocessing import merge_rows

    try:
        table = merge_rows(list(outputs), rule)
        store = OutputStore(output)
        store.check_writable()
        store.fs.makedirs(store.root, exist_ok=True)
        with store.fs.open(store.path("view.parquet"), "wb") as fh:
            pq.write_table(table, fh)
        counts = {s: table.column("view_source").to_pylist().count(s) for s in outputs}
        with store.fs.open(store.path("_view.json"), "w") as fh:
            json.dump({"sources": list(outputs), "rule": rule, "rows": table.num_rows, "rows_by_source": counts}, fh,
                      indent=1)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    console.print(f"view of {table.num_rows} keys ({rule}): {store.public_url('view.parquet')}; rows by source "
                  f"{counts}; images stay where image_url points")


