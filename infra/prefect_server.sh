#!/usr/bin/env bash
# A persistent Prefect server on loopback; then `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
set -euo pipefail
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec prefect server start --host 127.0.0.1 --port 4200
