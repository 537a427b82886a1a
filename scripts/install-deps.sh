#!/usr/bin/env bash
# Installs the Debian packages paraspinal needs to build and test.
# Idempotent: installs only what is missing; runs apt-get update first when
# something is missing. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  zlib1g-dev libdeflate-dev libpng-dev libcjson-dev libcmocka-dev
  libnifti2-dev nettle-dev
  g++ libdcmtk-dev dcmtk
  chromium
  orthanc curl python3-pydicom python3-numpy
  jq
  snakemake
  clang libclang-rt-14-dev valgrind
  libomp-14-dev
)
# chromium: only for the test that opens report.html headless and drives its
# keyboard review (tests/integration/test_html_report.sh).
# g++ libdcmtk-dev: the DICOM bridge (src/io/dicom_dcmtk.cpp); dcmtk: its
#   command-line tools (storescu, dciodvfy...) used by the DICOM tests.
# orthanc curl: the PACS round-trip test (tests/integration/test_orthanc.sh).
# jq: scripts/pacs/orthanc-postprocess.sh reads Orthanc's REST answers with it (and its test).
# python3-pydicom: real DICOM test files nobody here wrote (MR_small*.dcm).
# python3-numpy: tests/tools/make_dicom.py (phantoms as vendor-style DICOM series).
# snakemake: the cohort workflow in scripts/workflow and its test.
# clang libclang-rt-14-dev valgrind: fuzzers, sanitizers and memcheck (make check-deep).
# libomp-14-dev: LLVM's OpenMP runtime and its Archer tool for `make tsan` (ThreadSanitizer
#   needs an OpenMP runtime it understands; GCC's libgomp gives false positives).

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
