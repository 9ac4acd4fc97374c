#!/usr/bin/env bash
# Set up everything musicdecomp needs, then (optionally) run a command inside the environment.
#
#   ./setup.sh                             # set up only
#   ./setup.sh snakemake --cores 8 all     # set up, then build every result
#   ./setup.sh pytest                      # set up, then run the tests
#
# Steps (each skipped when already done, so a second run takes seconds):
#   1. Debian packages libfluidsynth3 and fluid-soundfont-gm, plus any in $EXTRA_APT_PACKAGES
#      (--no-install-recommends), as root;
#      without root it says what to install and goes on.
#   2. .venv with Python 3.11 and the pinned versions in requirements.txt (torch 2.11.0 etc.).
#   3. this package, installed editable.
set -euo pipefail

cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
# shellcheck disable=SC2206  # EXTRA_APT_PACKAGES is a space-separated list (.ci/run: the tests' one-node SLURM)
APT_PACKAGES=(libfluidsynth3 fluid-soundfont-gm ${EXTRA_APT_PACKAGES:-})
say() { printf '[setup] %s\n' "$*" >&2; }
pip_install() {
    # some pip configurations print a harmless "Location ... is ignored" line per package: drop those
    local rc=0
    .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2 || rc=$?
    [ "$rc" -eq 0 ] || { say "pip install $* failed (exit $rc)"; exit "$rc"; }
}

# 1. system packages -------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install FluidSynth and the FluidR3_GM soundfont yourself (conda: see environment.yml)"
    elif [ "$(id -u)" -ne 0 ]; then
        say "not root: skipping system packages. Install them with:"
        say "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    else
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# 2. virtual environment ---------------------------------------------------------------------------
stamp=.venv/.musicdecomp-setup
want="$( (cat requirements.txt pyproject.toml; "$PYTHON" --version) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    case "$version" in 3.11|3.12) ;; *) say "Python $version found; musicdecomp is pinned for 3.11 (set PYTHON=...)"; exit 1;; esac
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    say "installing pinned Python packages into .venv (first time: a few minutes, about 6 GB)"
    pip_install -r requirements.txt
    # 3. the package itself
    pip_install --no-deps -e .
    echo "$want" > "$stamp"
    say "environment ready: .venv"
fi

export PATH="$PWD/.venv/bin:$PATH" VIRTUAL_ENV="$PWD/.venv" DVC_NO_ANALYTICS=1
if [ $# -gt 0 ]; then
    exec "$@"
fi
