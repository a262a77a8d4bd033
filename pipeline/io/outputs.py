"""The output layout of a restore job, committed exactly once through a manifest.

    OUTPUT/images/part-NNNNN.tar        WebDataset: <key>.png restored, <key>.json
    OUTPUT/metrics/part-NNNNN.parquet   one row per sample (METRICS_SCHEMA)
    OUTPUT/_manifest.json               committed parts, counts, config hash
    OUTPUT/_config.yaml, stats.json

A part is written under `_tmp/` and moved into place; only then is it added to the
manifest, whose rewrite is the commit. Parts that are not in the manifest are debris of an
interrupted run and are removed on the next start, so every key lands exactly once.

On s3:// the manifest is written with boto3 conditional puts (If-Match on the ETag last
read or written, If-None-Match for a new one) and part files with If-None-Match, because
S3 has no atomic rename: a second writer gets `CommitConflict` instead of overwriting a
commit it has not seen.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.storage import get_object_bytes, s3_client

MANIFEST = "_manifest.json"
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class CommitConflict(RuntimeError):
    """Another writer committed to the same output since this one last read the manifest."""

METRICS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("error_kind", pa.string()), ("operator", pa.string()), ("severity", pa.float64()),
    ("noise_sigma", pa.float64()), ("estimated", pa.string()), ("sigma2_hat", pa.float64()), ("start_step", pa.int64()),
    ("nfe", pa.int64()), ("height", pa.int64()), ("width", pa.int64()), ("tiles", pa.int64()),
    ("tile_steps", pa.int64()), ("solver", pa.string()), ("flash", pa.bool_()),
    ("psnr", pa.float64()), ("ssim", pa.float64()), ("lpips", pa.float64()), ("psnr_input", pa.float64()),
    ("colour_shift", pa.float64()), ("colour_shift_input", pa.float64()),
    ("blocking", pa.float64()), ("blocking_input", pa.float64()), ("metrics_missing", pa.string()),
    ("residual", pa.float64()), ("residual_z", pa.float64()), ("severity_ood", pa.float64()),
    ("budget_action", pa.string()),
    ("seconds_severity", pa.float64()), ("seconds_solve", pa.float64()),
    ("denoiser_calls", pa.int64()), ("decoder_forward", pa.int64()), ("decoder_backward", pa.int64()),
    ("encoder_forward", pa.int64()), ("inner_steps", pa.int64()), ("severity_forward", pa.int64()),
    ("inversion_calls", pa.int64()),
    ("seed", pa.int64()), ("input_sha256", pa.string()),
    ("config_hash", pa.string()), ("model_hash", pa.string()), ("image_url", pa.string()), ("part", pa.string()),
    ("lineage_source", pa.string()), ("lineage_row", pa.string()), ("lineage_config_diff", pa.string()),
    ("lineage_model_hash", pa.string()),
])


def error_row(key: str, shard: str, message: str, kind: str, **extra: Any) -> dict:
    """The row of a sample that could not be restored: it is recorded, never dropped."""
    return {"key": key, "shard": shard, "status": "error", "error": message, "error_kind": kind, **extra}


def error_for(key: str, shard: str, exc: Exception) -> dict:
    """The error row of a failed sample: its kind (a SampleError's, else the exception type)
    and a message that names the key."""
    kind = getattr(exc, "kind", type(exc).__name__)
    msg = str(exc) if key in str(exc) else f"sample {key}: {exc}"
    return error_row(key, shard, msg, kind)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows → the metrics table; a field the schema lacks is a bug, never silently dropped."""
    unknown = sorted({k for r in rows for k in r} - set(METRICS_SCHEMA.names))
    if unknown:
        raise ValueError(f"metrics rows carry fields not in METRICS_SCHEMA: {unknown}")
    cols = {name: [r.get(name) for r in rows] for name in METRICS_SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=METRICS_SCHEMA)


class OutputStore:
    """One job's output folder on any fsspec URL."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_s3 = bool({"s3", "s3a"} & set(protocols))
        self._storage_options = storage_options or {}
        self._client = None
        self._etag: str | None = None  # of the manifest this store last read or wrote (s3)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def public_url(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    # --- manifest -------------------------------------------------------------------
    # --- s3: conditional puts through boto3 -----------------------------------------
    def _s3(self):
        if self._client is None:
            kw = dict(self._storage_options.get("client_kwargs") or {})
            if self._storage_options.get("endpoint_url"):
                kw["endpoint_url"] = self._storage_options["endpoint_url"]
            self._client = s3_client(**kw)
        return self._client

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, _, prefix = self.root.partition("/")
        return bucket, f"{prefix}/{rel}" if prefix else rel

    def _put_s3(self, rel: str, data: bytes, **condition) -> str:
        """put_object with a condition; a failed condition is a CommitConflict. Returns the ETag.

        A retried put whose first attempt landed (its answer was lost) fails its own
        condition: when the object holds exactly `data`, that write was ours and succeeded."""
        # lazy: botocore loads only for s3:// URLs
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key(rel)
        try:
            return self._s3().put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _CONFLICT_CODES:
                raise
            landed, etag = get_object_bytes(self._s3(), bucket, key)
            if landed == data:
                return etag
            raise CommitConflict(f"{self.public_url(rel)}: another writer committed first ({condition}); "
                                 "two jobs must not write one output") from exc

    def _read_manifest_s3(self) -> dict | None:
        # lazy: botocore loads only for s3:// URLs
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key(MANIFEST)
        try:
            body, self._etag = get_object_bytes(self._s3(), bucket, key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                self._etag = None
                return None
            raise
        return json.loads(body)

    def _fresh(self) -> None:
        if self.is_s3:  # another process (the writer actor) may have written since s3fs listed
            self.fs.invalidate_cache()

    def read_manifest(self) -> dict | None:
        if self.is_s3:
            return self._read_manifest_s3()
        p = self.path(MANIFEST)
        if not self.fs.exists(p):
            return None
        with self.fs.open(p, "r") as fh:
            return json.load(fh)

    def _write_manifest(self, manifest: dict) -> None:
        if self.is_s3:
            data = json.dumps(manifest, indent=1, sort_keys=True).encode()
            self._etag = self._put_s3(MANIFEST, data, **({"IfMatch": self._etag} if self._etag else
                                                         {"IfNoneMatch": "*"}))
            return
        self.fs.makedirs(self.path("_tmp"), exist_ok=True)
        tmp = self.path(f"_tmp/{MANIFEST}.{uuid.uuid4().hex}")
        with self.fs.open(tmp, "w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        self.fs.mv(tmp, self.path(MANIFEST))

    def check_writable(self) -> None:
        """Fail fast, before any compute, when the output cannot be written (a read-only
        folder, missing credentials): ValueError with the reason."""
        probe = self.path(f"_tmp/write-probe-{uuid.uuid4().hex}")
        existed = self.fs.exists(self.root)
        try:
            self.fs.makedirs(self.path("_tmp"), exist_ok=True)
            self.fs.pipe_file(probe, b"")
            self.fs.rm(probe)
        except OSError as exc:
            raise ValueError(f"output {self.url} is not writable: {type(exc).__name__}: {exc}") from exc
        if not existed:  # a job that then fails before compute leaves no folder behind
            try:
                self.fs.rm(self.root, recursive=True)
            except FileNotFoundError:
                pass

    def prepare(self, config_hash: str, overwrite: bool = False) -> dict:
        """Start or resume: refuse a different config, clear debris, return the manifest."""
        self._fresh()  # boto3 writes bypass s3fs's listing cache
        manifest = self.read_manifest()
        if manifest is not None and overwrite:
            self.fs.rm(self.root, recursive=True)
            manifest, self._etag = None, None
        if manifest is not None and manifest.get("config_hash") != config_hash:
            raise ValueError(f"{self.url} holds a job with config hash {manifest.get('config_hash')}, this job's is "
                             f"{config_hash}: use another output, the same config, or --overwrite")
        if manifest is None:
            self.fs.makedirs(self.root, exist_ok=True)
            manifest = {"version": 1, "config_hash": config_hash, "created": time.time(), "parts": {},
                        "counts": {"ok": 0, "error": 0}}
            self._write_manifest(manifest)
        self._remove_debris(manifest)
        return manifest

    def _remove_debris(self, manifest: dict) -> None:
        committed = set(manifest["parts"])
        for sub, ext in (("images", ".tar"), ("metrics", ".parquet")):
            d = self.path(sub)
            if not self.fs.exists(d):
                continue
            for p in self.fs.ls(d, detail=False):
                name = p.rsplit("/", 1)[-1].removesuffix(ext)
                if name not in committed:
                    self.fs.rm(p)
        if self.fs.exists(self.path("_tmp")):
            self.fs.rm(self.path("_tmp"), recursive=True)

    def done_keys(self, manifest: dict | None = None) -> set[str]:
        """Keys already committed (ok or error): a resumed job skips them."""
        manifest = manifest if manifest is not None else (self.read_manifest() or {"parts": {}})
        self._fresh()
        keys: set[str] = set()
        for info in manifest["parts"].values():
            with self.fs.open(self.path(info["metrics"]), "rb") as fh:
                keys.update(pq.read_table(fh, columns=["key"]).column("key").to_pylist())
        return keys

    def commit(self, part: "PartBuffer", manifest: dict) -> dict:
        """Write a part under _tmp/, move it into place, then record it in the manifest."""
        name = f"part-{len(manifest['parts']):05d}"
        tmp = f"_tmp/{uuid.uuid4().hex}"
        files = {"images": f"images/{name}.tar", "metrics": f"metrics/{name}.parquet"}
        self.fs.makedirs(self.path("_tmp"), exist_ok=True)
        rows = [{**r, "part": name, "image_url": (self.public_url(files["images"]) + f"#{r['key']}.png")
                 if r.get("status") == "ok" else None} for r in part.rows]
        if self.is_s3:  # no rename on S3: write in place, never over an existing object
            buf = io.BytesIO()
            pq.write_table(rows_to_table(rows), buf)
            self._put_s3(files["images"], part.tar_bytes(), IfNoneMatch="*")
            self._put_s3(files["metrics"], buf.getvalue(), IfNoneMatch="*")
        else:
            with self.fs.open(self.path(f"{tmp}.tar"), "wb") as fh:
                fh.write(part.tar_bytes())
            with self.fs.open(self.path(f"{tmp}.parquet"), "wb") as fh:
                pq.write_table(rows_to_table(rows), fh)
            self.fs.makedirs(self.path("images"), exist_ok=True)
            self.fs.makedirs(self.path("metrics"), exist_ok=True)
            self.fs.mv(self.path(f"{tmp}.tar"), self.path(files["images"]))
            self.fs.mv(self.path(f"{tmp}.parquet"), self.path(files["metrics"]))
        ok = sum(r.get("status") == "ok" for r in rows)
        manifest["parts"][name] = {**files, "samples": len(rows), "ok": ok, "error": len(rows) - ok,
                                   "committed": time.time()}
        manifest["counts"]["ok"] += ok
        manifest["counts"]["error"] += len(rows) - ok
        self._write_manifest(manifest)
        return manifest["parts"][name]

    def write_json(self, rel: str, data: dict) -> None:
        with self.fs.open(self.path(rel), "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, default=str)

    def read_metrics(self) -> pa.Table:
        """All committed rows (what downstream tools read)."""
        manifest = self.read_manifest() or {"parts": {}}
        self._fresh()
        tables = []
        for info in manifest["parts"].values():
            with self.fs.open(self.path(info["metrics"]), "rb") as fh:
                tables.append(pq.read_table(fh))
        # parts written by an older version may lack a newer column: it reads as null
        return pa.concat_tables(tables, promote_options="default") if tables else METRICS_SCHEMA.empty_table()


@dataclass
class PartBuffer:
    """Rows and restored images waiting to be committed as one part."""

    rows: list[dict] = field(default_factory=list)
    images: list[tuple[str, bytes, dict]] = field(default_factory=list)

    def add(self, row: dict, png: bytes | None = None, meta: dict | None = None) -> None:
        self.rows.append(row)
        if png is not None:
            self.images.append((row["key"], png, meta or {}))

    def __len__(self) -> int:
        return len(self.rows)

    def tar_bytes(self) -> bytes:
        """A WebDataset tar in key order with fixed metadata, so reruns give identical bytes."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, png, meta in sorted(self.images, key=lambda t: t[0]):
                for suffix, data in ((".png", png), (".json", json.dumps(meta, sort_keys=True).encode())):
                    info = tarfile.TarInfo(key + suffix)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()
