"""The FluidSynth kit for machines without FluidSynth (workflow/scripts/fluidsynth_kit.sh): its libraries,
unpacked from Debian's .deb files, are the ones loaded, and it renders what the system's FluidSynth renders."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, tool_env

PROBE = """
import json, sys
from musicdecomp.data.render import Synth
s = Synth(sys.argv[1], 24000, 0.5, True, True)
s.select(9, 128, 25)
drums = s.play([(0, "on", 9, 36, 110), (6000, "on", 9, 42, 90), (12000, "off", 9, 36, 0)], 24000)
note = s.note(45, 33, 100, 12000, 24000)
maps = open("/proc/self/maps").read().split()
print(json.dumps({"libs": sorted({m for m in maps if "libfluidsynth" in m or "libinstpatch" in m}),
                  "samples": drums[:, 0].tolist()[::50] + note.tolist()[::50]}))
"""


def probe(env_extra: dict, soundfont) -> dict:
    env = {**tool_env(), **env_extra}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(soundfont)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # pyfluidsynth prints a line first when CI is set


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("the kit is built from Debian packages (apt-get, dpkg)")
    out = tmp_path_factory.mktemp("kit") / "kit"
    proc = subprocess.run(["bash", str(REPO / "workflow/scripts/fluidsynth_kit.sh"), str(out)], env=tool_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def test_kit_holds_the_libraries_wheels_and_soundfont(kit):
    assert (kit / "lib" / "libfluidsynth.so.3").exists() and (kit / "TimGM6mb.sf2").stat().st_size > 5_000_000
    names = {p.name.split("-")[0].lower() for p in (kit / "wheels").glob("*.whl")}
    assert names == {"pyfluidsynth", "soundfile", "cffi", "pycparser", "encodec"}
    packages = (kit / "packages.txt").read_text().split("\n")
    assert any(line.startswith("libfluidsynth3 ") for line in packages)
    assert not any(line.startswith(("libc6 ", "libstdc++6 ")) for line in packages)  # left to the target
    assert "MUSICDECOMP_FLUIDSYNTH_LIB" in (kit / "env.sh").read_text()
    size = sum(f.stat().st_size for f in kit.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 48 * 2**20  # it travels beside the repository (64 MiB a call)


def test_kit_libraries_are_loaded_and_render_like_the_system(kit):
    via_kit = probe({"LD_LIBRARY_PATH": str(kit / "lib"),
                     "MUSICDECOMP_FLUIDSYNTH_LIB": str(kit / "lib" / "libfluidsynth.so.3")}, kit / "TimGM6mb.sf2")
    assert via_kit["libs"] and all(lib.startswith(str(kit / "lib")) for lib in via_kit["libs"])
    system = probe({}, kit / "TimGM6mb.sf2")
    assert not any(lib.startswith(str(kit)) for lib in system["libs"])
    assert max(abs(x) for x in via_kit["samples"]) > 1e-3  # the kick and the bass note sound
    assert via_kit["samples"] == system["samples"]


def test_a_wrong_library_path_is_a_clear_error(tmp_path):
    env = {**tool_env(), "MUSICDECOMP_FLUIDSYNTH_LIB": str(tmp_path / "libfluidsynth.so.3")}
    proc = subprocess.run([sys.executable, "-c", "from musicdecomp.data.render import import_fluidsynth; "
                           "import_fluidsynth()"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "MUSICDECOMP_FLUIDSYNTH_LIB" in proc.stderr and "does not exist" in proc.stderr
