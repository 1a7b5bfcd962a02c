#!/usr/bin/env bash
# Start the whole product on the embedded default (SQLite + filesystem broker) with demo data:
# API server, Celery worker and Celery beat, stopped together with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-8000}
mkdir -p var/broker/processed

$BIN/python manage.py migrate --noinput
$BIN/python manage.py seed_demo --operator
$BIN/python manage.py collectstatic --noinput -v 0

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$BIN/celery -A config worker --loglevel=INFO --pool=solo >var/worker.log 2>&1 &
pids+=($!)
$BIN/celery -A config beat --loglevel=INFO >var/beat.log 2>&1 &
pids+=($!)
$BIN/python manage.py runserver "127.0.0.1:$PORT" --noreload &
pids+=($!)

sleep 2
cat <<MSG

  GPU marketplace is running (worker log: var/worker.log, beat log: var/beat.log).
  API docs:  http://127.0.0.1:$PORT/api/docs/
  Admin:     http://127.0.0.1:$PORT/admin/
  Pools:     http://127.0.0.1:$PORT/api/v1/pools/
  Health:    http://127.0.0.1:$PORT/readyz
  Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
