#!/usr/bin/env bash
# Installs the packages whose photos make the project's image corpus (see
# data/photos/README.md): wallpapers and opencv examples from Debian, sample images
# from scikit-image / scikit-learn into the venv. Idempotent: skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."
DEB_PKGS="plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 opencv-doc"
missing=""
for p in $DEB_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
for mod_pkg in skimage:scikit-image sklearn:scikit-learn; do
    mod=${mod_pkg%%:*}; pkg=${mod_pkg#*:}
    "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is None)" \
        || "$PY" -m pip install -q "$pkg"
done
echo "photo packages installed"
