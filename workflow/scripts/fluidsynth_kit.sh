#!/usr/bin/env bash
# Build a relocatable FluidSynth kit for a machine that has Python but no FluidSynth, no soundfont and no network
# (the lent GPU machines): render the stems there instead of carrying hours of audio.
#
#   workflow/scripts/fluidsynth_kit.sh [KIT_DIR]        (default .fluidsynth; run where ./setup.sh has run)
#
# KIT_DIR/lib/      libfluidsynth.so.3 and every library it loads, unpacked from Debian's .deb files
#                   (apt-get download + dpkg -x); glibc, libgcc and libstdc++ are left to the target
# KIT_DIR/wheels/   pyfluidsynth, soundfile (+ cffi, pycparser) and encodec for Python 3.12, pinned as requirements.txt
# KIT_DIR/TimGM6mb.sf2  the 6 MB GM soundfont pretty_midi ships (FluidR3_GM is 148 MB)
# KIT_DIR/env.sh    source it there: installs the wheels to /tmp/site, sets LD_LIBRARY_PATH, PYTHONPATH and
#                   MUSICDECOMP_FLUIDSYNTH_LIB (musicdecomp.data.render loads that exact file)
# Then render with the small soundfont: python -m musicdecomp stems --params params.yaml config/kit.yaml ...
# (the dataset's summary.json records which soundfont, by path and sha256).
set -euo pipefail
KIT=${1:-.fluidsynth}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
LIB=$(ldconfig -p | awk '/libfluidsynth\.so\.3 / && !found {print $NF; found = 1}')  # reads all: no SIGPIPE
[ -n "$LIB" ] || { echo "libfluidsynth3 is not installed here: run ./setup.sh first" >&2; exit 1; }
BASE="libc6 libgcc-s1 libstdc++6"

mkdir -p "$KIT/lib" "$KIT/wheels"
KIT=$(cd "$KIT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# the Debian packages owning libfluidsynth.so.3 and each library it loads (by ldd's closure)
pkgs=$( { echo "$LIB"; ldd "$LIB" | awk '$3 ~ /^\// {print $3}'; } | while read -r f; do
          dpkg -S "$(readlink -f "$f")" 2>/dev/null || dpkg -S "$f"; done | cut -d: -f1 | sort -u)
want=""
for p in $pkgs; do case " $BASE " in *" $p "*) ;; *) want="$want $p" ;; esac; done
echo "[kit] packages:$want"
(cd "$WORK" && apt-get download -q $want >/dev/null)
for deb in "$WORK"/*.deb; do dpkg -x "$deb" "$WORK/root"; done
find "$WORK/root" \( -type f -o -type l \) -name '*.so*' -path '*x86_64-linux-gnu*' -exec cp -a {} "$KIT/lib/" \;
[ -e "$KIT/lib/libfluidsynth.so.3" ] || { echo "libfluidsynth.so.3 missing from the unpacked packages" >&2; exit 1; }
# note the packages and versions the kit was built from
for deb in "$WORK"/*.deb; do dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb"; done > "$KIT/packages.txt"

# wheels for the target's Python 3.12 (manylinux x86-64), at this project's pins
pin() { grep -i -m1 "^$1==" "$REPO/requirements.txt"; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$KIT/wheels" "$(pin soundfile)" cffi pycparser 2>&1 | grep -v "is ignored" || true
# pure-Python packages published as source only: build their (py3-none-any) wheels here
"$PY" -m pip wheel -q --no-deps -w "$KIT/wheels" "$(pin pyfluidsynth)" "$(pin encodec)" 2>&1 | grep -v "is ignored" || true
for w in soundfile cffi pycparser pyfluidsynth encodec; do
  ls "$KIT/wheels" | grep -i "^$w-" >/dev/null || { echo "no wheel for $w in $KIT/wheels" >&2; exit 1; }
done

# locate pretty_midi without importing it (its import loads pyfluidsynth, which prints when CI is set)
SF=$("$PY" -c 'import importlib.util as u, os; print(os.path.join(u.find_spec("pretty_midi").submodule_search_locations[0], "TimGM6mb.sf2"))')
cp "$SF" "$KIT/TimGM6mb.sf2"

cat > "$KIT/env.sh" <<'ENV'
# source this file on the target machine (bash): wheels into /tmp/site, the kit's libraries first
_kit=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$_kit"/wheels/*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$_kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MUSICDECOMP_FLUIDSYNTH_LIB=$_kit/lib/libfluidsynth.so.3
ENV
echo "[kit] $(du -sh "$KIT" | cut -f1) in $KIT ($(ls "$KIT/lib" | wc -l) library files, $(ls "$KIT/wheels" | wc -l) wheels)"
