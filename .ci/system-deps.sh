#!/usr/bin/env bash
# System packages the test suite drives for real: Debian's chromium (browser test) and a single-node
# SLURM cluster (cluster tests; .ci/slurm-setup.sh installs and configures it, the tests start it).
# Idempotent: installs only what is missing. Needs root or passwordless sudo on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system-deps: needs root or passwordless sudo to install chromium and slurm (Debian packages)." >&2
    echo "system-deps: as root run: bash .ci/system-deps.sh" >&2
    exit 1
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "system-deps: installing chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
$SUDO bash .ci/slurm-setup.sh install
