#!/usr/bin/env bash
# Headless Chromium for tests/browser_check.py: Debian's `chromium`, installed when missing.
set -euo pipefail
if [ -n "${CHROMIUM:-}" ] || [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    echo "chromium is missing and apt-get needs root: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
echo "installing Debian's chromium (apt-get, once)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
