"""One retry policy for object storage, whoever opens it (s3fs through fsspec, or boto3).

Why: at archive scale, connection resets, 500/503 answers (S3's `SlowDown`) and slow or
cut reads are routine, not exceptional. botocore's `standard` retry mode retries them
with exponential backoff and jitter; s3fs retries reads cut mid-body. Importing this module
makes that policy the default of every S3 filesystem fsspec creates in the process
(`fsspec.config.conf`, so explicit arguments still win) and `s3_client()` gives boto3
clients the same one. `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS` override it, as in any AWS tool.

A retried write may have landed the first time (the answer was lost, not the request):
callers that write conditionally check for their own write (`OutputStore._put_s3`).
"""
from __future__ import annotations

import os
import random
import time

import fsspec.config
from urllib3.exceptions import ProtocolError

DEFAULT_MAX_ATTEMPTS = 10


def retry_policy() -> dict:
    """botocore's `retries` option: the mode and the total attempts per request (botocore's
    own `max_attempts` key counts retries only, `AWS_MAX_ATTEMPTS` counts attempts)."""
    mode = os.environ.get("AWS_RETRY_MODE", "standard")
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    if attempts < 1:
        raise ValueError(f"AWS_MAX_ATTEMPTS must be ≥ 1, got {attempts}")
    return {"mode": mode, "total_max_attempts": attempts}


def use_retry_policy() -> None:
    """Make the policy the default config of fsspec's S3 filesystems (idempotent)."""
    for protocol in ("s3", "s3a"):
        defaults = fsspec.config.conf.setdefault(protocol, {})
        defaults.setdefault("config_kwargs", {"retries": retry_policy()})


def s3_client(**kwargs):
    """A boto3 S3 client with the retry policy."""
    # lazy: boto3 loads only for s3:// URLs
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries=retry_policy()), **kwargs)


def get_object_bytes(client, bucket: str, key: str) -> tuple[bytes, str]:
    """(body, ETag) of an object. botocore retries failed requests, but not an answer cut
    mid-body (the object's, or an error answer's, which it reads before deciding): those are
    retried here, with the same attempts and jittered backoff."""
    # lazy: botocore loads only for s3:// URLs
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    attempts = retry_policy()["total_max_attempts"]
    for attempt in range(attempts):
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            return resp["Body"].read(), resp["ETag"]
        except (ResponseStreamingError, IncompleteReadError, ProtocolError, ConnectionError):
            if attempt + 1 == attempts:
                raise
            time.sleep(random.random() * min(20.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")

