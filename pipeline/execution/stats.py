"""Job statistics: per-stage busy time and throughput, NFE histogram, error counts by kind.

Both backends fill one `JobStats`; it is written as OUTPUT/stats.json and summarised on the
driver. Pure Python so actors can send their stage times to the driver as plain dicts.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class JobStats:
    started: float = field(default_factory=time.time)
    stage_seconds: Counter = field(default_factory=Counter)   # busy seconds per stage
    stage_items: Counter = field(default_factory=Counter)     # items processed per stage
    status: Counter = field(default_factory=Counter)          # ok / error / skipped
    error_kinds: Counter = field(default_factory=Counter)
    nfe: Counter = field(default_factory=Counter)              # NFE histogram (bins of 10)
    nfe_total: int = 0
    skipped: int = 0
    driver_bytes: int = 0   # what the scheduler received: records, not images
    startup_seconds: float = 0.0  # until every actor was up with its models loaded

    def stage(self, name: str, seconds: float, items: int) -> None:
        self.stage_seconds[name] += seconds
        self.stage_items[name] += items

    def row(self, row: dict) -> None:
        self.status[row["status"]] += 1
        if row["status"] == "ok":
            nfe = int(row.get("nfe") or 0)
            self.nfe_total += nfe
            self.nfe[(nfe // 10) * 10] += 1
        else:
            self.error_kinds[row.get("error_kind") or "unknown"] += 1

    @property
    def processed(self) -> int:
        return sum(self.status.values())

    @property
    def error_rate(self) -> float:
        return self.status["error"] / self.processed if self.processed else 0.0

    def to_dict(self, wall: float | None = None) -> dict:
        wall = wall if wall is not None else time.time() - self.started
        stages = {name: {"busy_seconds": round(s, 4), "items": self.stage_items[name],
                         "items_per_s_busy": round(self.stage_items[name] / s, 4) if s > 0 else None,
                         "busy_fraction": round(s / wall, 4) if wall > 0 else None}
                  for name, s in sorted(self.stage_seconds.items())}
        ok = self.status["ok"]
        return {"wall_seconds": round(wall, 3), "samples": self.processed, "ok": ok, "errors": self.status["error"],
                "skipped_already_done": self.skipped, "error_rate": round(self.error_rate, 4),
                "errors_by_kind": dict(self.error_kinds), "images_per_s": round(ok / wall, 4) if wall > 0 else None,
                "startup_seconds": round(self.startup_seconds, 3),
                "images_per_s_after_startup": round(ok / (wall - self.startup_seconds), 4)
                if wall > self.startup_seconds else None,
                "mean_nfe": round(self.nfe_total / ok, 3) if ok else None,
                "nfe_histogram": {f"{b}-{b + 9}": n for b, n in sorted(self.nfe.items())}, "stages": stages,
                "driver_bytes_received": self.driver_bytes,
                "driver_bytes_per_sample": round(self.driver_bytes / self.processed, 1) if self.processed else None}
