#!/usr/bin/env bash
# Installs what the tests need and runs every test. Works from nothing on a fresh machine;
# reuses a target directory and a venv under ~/.cache when they exist.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ingest-target}"
export CARGO_TERM_COLOR=never

# DuckDB 1.4.4 with its delta and httpfs extensions, Python's deltalake and polars (reader checks),
# moto's S3 server (the S3-compatible store the S3 tests run against, on loopback), and
# prometheus_client (parses /metrics) and selenium (drives Chromium) for `ingest serve`.
VENV="${INGEST_VENV:-$HOME/.cache/ingest-venv}"
ext() { ls "$VENV"/lib/python*/site-packages/duckdb_ext/extensions/v1.4.4/*/"$1".duckdb_extension 2>/dev/null | head -1; }
if ! "$VENV/bin/python" -c "import duckdb, pytz, moto.server, deltalake, flask_cors, polars, prometheus_client, selenium" 2>/dev/null || [ -z "$(ext delta)" ] || [ -z "$(ext httpfs)" ]; then
  echo "== installing DuckDB, deltalake, moto, prometheus_client and selenium into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb==1.4.4 duckdb-ext-delta duckdb-ext-httpfs pytz \
    deltalake polars "moto[server]" prometheus-client selenium
fi
# Debian's Chromium and its driver: `ingest serve`'s status page is checked in a real browser.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "== installing chromium and chromium-driver"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
export INGEST_PYTHON="$VENV/bin/python"
INGEST_DUCKDB_DELTA="$(ext delta)"
INGEST_DUCKDB_HTTPFS="$(ext httpfs)"
export INGEST_DUCKDB_DELTA INGEST_DUCKDB_HTTPFS

echo "== building (target: $CARGO_TARGET_DIR)"
cargo build --locked --tests --bins

echo "== testing"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --test-threads 2 "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
