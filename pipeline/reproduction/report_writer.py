"""Writing docs/reproduction.md: the stored cells read into a `Report`, its text rendered, and
evaluation.json (the run's meta and the commands that made the cells) kept beside it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.reproduction.cell_store import load_task
from pipeline.reproduction.report import Report
from pipeline.reproduction.report_text import render
from pipeline.reproduction.suite import TASKS, Budget, Cell


def made_by(report: Report, last: str | None) -> list[str]:
    """The commands that made the stored cells, each once, in the order their cells finished, and
    the last run's last: read from the cells themselves, so a run stopped part-way is named too."""
    records = sorted((r for r in report.cells.values() if r and r.get("command")), key=lambda r: r.get("finished", ""))
    made = [r["command"] for r in records if r["command"] != last]
    return list(dict.fromkeys(made + ([last] if last else [])))


def write_report(out: Path, cells: list[Cell], budget: Budget, quick: bool, meta: dict | None = None,
                 settings: str | None = None) -> Path:
    """Write OUT.md (and OUT/*.png) from the cells under OUT; returns the report's path. `settings`
    (a rebuild's `--settings`) replaces the stored table the staleness check reads."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "evaluation.json"
    stored = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta is not None:
        stored = {**meta, "quick": quick, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    stored["settings"] = settings or stored.get("settings", "tuned")
    report = Report(out, cells, budget, stored["settings"])
    stored["commands"] = made_by(report, stored.get("command"))
    meta_path.write_text(json.dumps(stored, indent=1) + "\n")
    meta = stored
    tasks = {t: load_task(out, t) for t in TASKS}
    path = out.with_suffix(".md")
    path.write_text(render(report, meta, tasks, quick))
    return path
