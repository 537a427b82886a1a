#!/usr/bin/env bash
# Installs the Debian packages paraspinal needs to build and test.
# Idempotent: installs only what is missing; runs apt-get update first when
# something is missing. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  zlib1g-dev libdeflate-dev libpng-dev libcjson-dev libcmocka-dev
  libnifti2-dev nettle-dev
  chromium
)
# chromium: only for the test that opens report.html headless and drives its
# keyboard review (tests/integration/test_html_report.sh).

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
