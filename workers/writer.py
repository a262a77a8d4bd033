"""Writer actor: buffers restored images and rows into parts and commits them.

The only process that commits: parts go through `OutputStore.commit`, whose manifest write
is the commit point, so a crash loses at most the uncommitted buffer, which the next run
redoes. It returns light rows (no images) so the driver can keep statistics.
"""
from __future__ import annotations

import time

from pipeline.outputs import OutputStore, PartBuffer

from .placement import new_incarnation

LIGHT = ("key", "status", "nfe", "error_kind")


class Writer:
    def __init__(self, output_url: str, part_size: int):
        self.store = OutputStore(output_url)
        self.manifest = self.store.read_manifest()
        if self.manifest is None:
            raise RuntimeError(f"{output_url}: no manifest; the driver prepares the output before writing")
        self.part_size, self.part = part_size, PartBuffer()
        self.incarnation = new_incarnation()
        self.committed = 0

    def ping(self) -> str:
        return self.incarnation

    def add(self, results: list[tuple[dict, bytes | None, dict | None]]) -> dict:
        t0 = time.perf_counter()
        for row, png, meta in results:
            self.part.add(row, png, meta)
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
