#!/usr/bin/env bash
# The browser tests (tests/dashboard/test_browser.py) drive Debian's chromium through
# Playwright. Install it with apt-get when it is missing; fail clearly when that cannot be done.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "Chromium is missing at $CHROMIUM and apt-get is not available: install chromium (or set CHROMIUM to its path) to run the browser tests." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "Chromium is missing at $CHROMIUM: run 'sudo apt-get install -y chromium' (the browser tests need it)." >&2
  exit 1
fi
echo "Installing chromium for the browser tests (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q chromium >/dev/null; } \
  || { echo "Could not install chromium with apt-get: install it (apt-get install chromium) to run the browser tests." >&2; exit 1; }
[ -x "$CHROMIUM" ] || { echo "apt-get installed chromium but $CHROMIUM is still missing: set CHROMIUM to its path." >&2; exit 1; }
echo "Chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
