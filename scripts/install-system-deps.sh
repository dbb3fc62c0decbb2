#!/usr/bin/env bash
# Install the Debian packages the platform runs on, only those missing (idempotent).
# Usage: scripts/install-system-deps.sh [extra-package ...]
set -euo pipefail

# dcmtk: storescu/echoscu, a second modality for the DICOM listener's tests and for users.
# postgresql: the server the PostgreSQL tests start (tests/test_orthanc_postgres_e2e.py).
# nodejs (with npm): the Medplum FHIR server the patient-chain tests also run against, and
# configurable-http-proxy, JupyterHub's proxy (make node-deps).
#   OHIF's prebuilt viewer (make viewer: npm ci --prefix ohif).
# wrk: drives the soak test (tests/test_soak_e2e.py) and the benchmarks.
# chromium, chromium-driver: the headless browser of the browser tests (tests/browser.py).
packages=(orthanc orthanc-dicomweb orthanc-python orthanc-postgresql postgresql nginx dicom3tools openjph-tools dcmtk wrk chromium chromium-driver nodejs "$@")
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# The packages' own services are not used (the platform runs its own processes); where the
# machine has an init system their postinst may start them, which is harmless on other ports.
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
