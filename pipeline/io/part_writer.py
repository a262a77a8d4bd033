"""The write stage: rows and restored images buffered into parts, each part one commit.

`OutputStore.commit` writes a part's Parquet and tar and then the manifest, which is the
commit point: a crash loses at most the uncommitted buffer, which the next run redoes. One
`PartWriter` per job is the only committer (a Ray actor or in process); it hands the
scheduler light rows (no images) for statistics. Preparing the output (its manifest and the
resolved config) is the job frame's (`workers.execute.open_output`).
"""
from __future__ import annotations

import time

from pipeline.io.outputs import OutputStore, PartBuffer

LIGHT = ("key", "status", "nfe", "error_kind")


class PartWriter:
    def __init__(self, output_url: str, part_size: int, lineage: dict[str, dict] | None = None):
        self.store = OutputStore(output_url)
        self.manifest = self.store.read_manifest()
        if self.manifest is None:
            raise RuntimeError(f"{output_url}: no manifest; the job prepares the output before writing")
        self.part_size, self.part = part_size, PartBuffer()
        self.committed = 0
        self.lineage = lineage or {}  # key (else shard: a re-read shard's new samples) → lineage_* columns

    def add(self, results: list[tuple[dict, bytes | None, dict | None]]) -> dict:
        t0 = time.perf_counter()
        for row, png, meta in results:
            self.part.add({**row, **(self.lineage.get(row["key"]) or self.lineage.get(row.get("shard"), {}))},
                          png, meta)
            if len(self.part) >= self.part_size:
                self._commit()
        return {"rows": [{k: r.get(k) for k in LIGHT} for r, _, _ in results], "parts": self.committed,
                "seconds": time.perf_counter() - t0}

    def finish(self) -> dict:
        t0 = time.perf_counter()
        if len(self.part):
            self._commit()
        return {"counts": dict(self.manifest["counts"]), "parts": self.committed,
                "seconds": time.perf_counter() - t0}

    def _commit(self) -> None:
        self.store.commit(self.part, self.manifest)
        self.part = PartBuffer()
        self.committed += 1
