#!/usr/bin/env bash
# System packages the test suite uses for real: Debian's chromium (+ driver) for the browser test.
# Idempotent: installs only what is missing. Needs root (or passwordless sudo) on Debian/Ubuntu.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "system-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
      exit 1
    fi
  fi
  echo "system-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The SLURM test cluster installs and starts itself when its setup script is present.
if [ -x .ci/slurm-setup.sh ]; then bash .ci/slurm-setup.sh; fi
