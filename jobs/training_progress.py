"""A rich progress bar for the training jobs: steps, latest losses, ETA."""
from __future__ import annotations


class RichProgress:
    """A rich progress bar with the latest losses and the ETA."""

    def __init__(self, title: str):
        self.title, self.bar, self.task = title, None, None

    def start(self, first_step: int, max_steps: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn())
        self.bar.start()
        self.task = self.bar.add_task(self.title, total=max_steps, completed=first_step, losses="")

    def update(self, step: int, logs: dict[str, float] | None) -> None:
        fields = {"losses": "  ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items()))} if logs else {}
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
