"""Redo only what needs it, and view several runs as one: selection, lineage, merge rules.

`plan_reprocess` selects rows of a finished output with a predicate (`pipeline.execution.predicates`)
and returns what a new job needs (`Plan`): the shards to read, which samples to restore, and
per key the lineage columns its new row carries (source output, source row, config diff,
source model hash). A shard-level row (`corrupt_tar`: the tar broke there, so nothing after
it was read) re-reads its shard: still broken, it comes back as the same error row with
lineage; repaired, the samples the source never had are restored, with the lineage of that
row. Rows that cannot be redone (no shard named, the shard gone) are reported, not refused
with the rest; so is a selected key the re-read shards no longer hold. `merge_rows` picks
exactly one row per key across outputs, by rule:

* `newest`: the row committed last (its part's commit time in the manifest);
* `best`: ok before error, then the lowest `residual_z` (the no-reference signal every
  ok row has), then newest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa

from pipeline.execution.config import WHOLE, RestoreConfig, load_config
from pipeline.io.outputs import OutputStore
from pipeline.execution.predicates import select
from pipeline.execution.typed_config import flatten

RULES = ("best", "newest")


def config_diff(old: RestoreConfig, new: RestoreConfig) -> dict:
    """{dotted key: [old, new]} over what changes outputs (execution settings left out)."""
    a, b = flatten(old.to_dict(), WHOLE), flatten(new.to_dict(), WHOLE)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if not k.startswith("execution.") and a.get(k) != b.get(k)}


def source_config(source: str) -> RestoreConfig:
    store = OutputStore(source)
    if store.read_manifest() is None:
        raise ValueError(f"{source} holds no flash-restore output (no _manifest.json)")
    if not store.fs.exists(store.path("_config.yaml")):
        raise ValueError(f"{source} has no _config.yaml: its job's config is unknown")
    return load_config(store.public_url("_config.yaml"))


SHARD_LEVEL = "corrupt_tar"   # the error kind that ends a shard's reading: the row stands for the rest of it


@dataclass
class Plan:
    """What a reprocess job reads and restores."""

    shards: list[str]                   # shards to read
    keys: set[str]                      # selected keys to redo
    whole: set[str]                     # shards of shard-level rows: also every key the source lacks
    source_keys: set[str]               # every key the source output has a row for
    lineage: dict[str, dict]            # key (or, for a whole shard's new samples, shard) → lineage columns
    skipped: dict[str, str] = field(default_factory=dict)  # selected key → why it cannot be redone

    def wants(self, key: str, shard: str) -> bool:
        """Whether the job restores `key`, read from `shard` (the scheduler's filter)."""
        return key in self.keys or (shard in self.whole and key not in self.source_keys)

    def not_redone(self, new_keys: set[str]) -> dict[str, str]:
        """Selected keys without a new row, and why: the plan skipped them, or their shard no longer holds them."""
        gone = {k: "not in its shard when re-read (a repaired shard's samples come under their own keys)"
                for k in sorted(self.keys - new_keys)}
        return {**self.skipped, **gone}


def plan_reprocess(source: str, where: str, cfg: RestoreConfig) -> Plan:
    """The plan for re-running the rows of `source` matching `where` with `cfg`; refused only when no
    selected row can be redone."""
    old = source_config(source)
    store = OutputStore(source)
    table = store.read_metrics()
    rows = select(table, where).to_pylist()
    if not rows:
        raise ValueError(f"--where {where!r} selects no rows of {source}")
    diff = json.dumps(config_diff(old, cfg), sort_keys=True, default=str)

    def lineage_of(r: dict) -> dict:
        return {"lineage_source": source, "lineage_row": f"{r['part']}#{r['key']}", "lineage_config_diff": diff,
                "lineage_model_hash": r.get("model_hash")}

    readable: dict[str, bool] = {}
    skipped, redo = {}, []
    for r in rows:
        shard = r.get("shard")
        if not shard:
            skipped[r["key"]] = "the row names no shard to read it from"
        elif not _readable(shard, readable):
            skipped[r["key"]] = f"its shard {shard} no longer exists"
        else:
            redo.append(r)
    if not redo:
        raise ValueError(f"no row selected by --where {where!r} can be redone: "
                         + "; ".join(f"{k}: {why}" for k, why in list(skipped.items())[:3]))
    shard_level = {r["shard"]: r for r in redo if r.get("error_kind") == SHARD_LEVEL}
    lineage = {**{s: lineage_of(r) for s, r in shard_level.items()}, **{r["key"]: lineage_of(r) for r in redo}}
    return Plan(sorted({r["shard"] for r in redo}), {r["key"] for r in redo}, set(shard_level),
                set(table.column("key").to_pylist()), lineage, skipped)


def _readable(url: str, known: dict[str, bool]) -> bool:
    """Whether the shard still exists (asked once per shard)."""
    if url not in known:
        fs, path = fsspec.core.url_to_fs(url)
        known[url] = fs.exists(path)
    return known[url]


def merge_rows(outputs: list[str], rule: str) -> pa.Table:
    """One row per key across `outputs`, chosen by `rule`, with a `view_source` column."""
    if rule not in RULES:
        raise ValueError(f"--rule must be one of {RULES}, got {rule!r}")
    chosen: dict[str, tuple] = {}
    for order, url in enumerate(outputs):
        store = OutputStore(url)
        manifest = store.read_manifest()
        if manifest is None:
            raise ValueError(f"{url} holds no flash-restore output (no _manifest.json)")
        committed = {name: info.get("committed", 0.0) for name, info in manifest["parts"].items()}
        for row in store.read_metrics().to_pylist():
            when = (committed.get(row["part"], 0.0), order)
            quality = (row["status"] == "ok", -(row["residual_z"] if row.get("residual_z") is not None else 1e30))
            score = when if rule == "newest" else (*quality, *when)
            if row["key"] not in chosen or score > chosen[row["key"]][0]:
                chosen[row["key"]] = (score, {**row, "view_source": url})
    rows = [chosen[k][1] for k in sorted(chosen)]
    return pa.Table.from_pylist(rows)
