#!/usr/bin/env bash
# A local S3-compatible object store for development: moto's server on loopback.
# Usage: source <(bash infra/local-s3.sh print-env) after starting it with `bash infra/local-s3.sh start`.
set -euo pipefail
PORT=${FLASH_S3_PORT:-9010}
case "${1:-start}" in
  start) exec "$(dirname "$0")/../.venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" ;;
  print-env)
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1" ;;
  *) echo "usage: $0 start|print-env" >&2; exit 2 ;;
esac
