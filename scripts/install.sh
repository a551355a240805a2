#!/usr/bin/env bash
# Installs everything mel2mel needs on Debian/Ubuntu: FluidSynth and the SoundFonts used for
# training data (apt, needs root), the CPU build of PyTorch, then mel2mel with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    fluidsynth musescore-general-soundfont fluid-soundfont-gm timgm6mb-soundfont \
    chromium >/dev/null  # chromium: the web tests drive it with Playwright (no browser download)

PY=${PYTHON:-python3}
# torch first: this pin resolves to the local CPU wheel; looser specs pull CUDA builds.
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e '.[dev]'
echo "mel2mel installed: $($PY -m mel2mel --version)"
