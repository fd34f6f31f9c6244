#!/usr/bin/env bash
# An S3-compatible server on loopback for trying stepedit against object storage.
set -euo pipefail
port="${1:-5555}"
cat <<MSG
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:${port} FSSPEC_S3_ENDPOINT_URL=http://127.0.0.1:${port}
MSG
exec moto_server -H 127.0.0.1 -p "${port}"
