"""Shared fixtures: the repository, synthetic JSB JSON files (tests/synthetic_jsb.py), the real ones from ../shared
for the tests of the real data's counts, tiny parameter sets, tiny pipeline runs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import synthetic_jsb as synth
import yaml

from musicdecomp.config import deep_merge, load_params

REPO = Path(__file__).resolve().parents[1]
# The real data (../shared/data beside the clone; MUSICDECOMP_SHARED_DATA names another folder, e.g. an empty one to
# check what a fresh clone runs). Only the tests that take the `real_jsb` fixture read it.
SHARED_DATA = Path(os.environ.get("MUSICDECOMP_SHARED_DATA") or REPO.parent / "shared" / "data")
SHARED_JSB = SHARED_DATA / "jsb-chorales"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: reads the real JSB Chorales from ../shared (MUSICDECOMP_SHARED_DATA) "
                                       "to check its counts; skips without them (added to every test using real_jsb)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "real_jsb" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Training with ``threads`` sets torch's process-wide thread count; a later test in the same process would
    otherwise run with it (and batched vs single encodings, compared exactly, can differ with the thread count)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tool_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first (python, snakemake, dvc), no progress bars."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MUSICDECOMP_PROGRESS"] = "0"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


@contextlib.contextmanager
def serve_folder(folder: Path):
    """A quiet HTTP server on loopback serving ``folder``; yields its base URL (downloads tested offline)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**tool_env(), **(env or {})}, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def snakemake(workdir: Path, *args: str, configfiles: list[Path] = (), check: bool = True, env: dict | None = None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", "none"]
    cmd += list(args)
    if configfiles:  # last: --configfile takes every argument after it
        cmd += ["--configfile", *map(str, configfiles)]
    return run(cmd, cwd=workdir, check=check, env=env)


@pytest.fixture(scope="session")
def synthetic_jsb(tmp_path_factory) -> Path:
    """A folder with synthetic jsb-chorales-quarter.json and Jsb16thSeparated.json (tests/synthetic_jsb.py)."""
    return synth.write(tmp_path_factory.mktemp("jsb"))


@pytest.fixture(scope="session")
def jsb_json(synthetic_jsb) -> Path:
    """The synthetic quarter-note chords file (the format of jsb-chorales-quarter.json)."""
    return synthetic_jsb / synth.QUARTER


@pytest.fixture(scope="session")
def jsb16_json(synthetic_jsb) -> Path:
    """The synthetic SATB file (the format of Jsb16thSeparated.json)."""
    return synthetic_jsb / synth.SEPARATED


@pytest.fixture(scope="session")
def real_jsb() -> Path:
    """The folder holding the real jsb-chorales-quarter.json and Jsb16thSeparated.json, for the tests that check the
    real data's counts (marked real_data); they skip without it."""
    missing = [n for n in (synth.QUARTER, synth.SEPARATED) if not (SHARED_JSB / n).is_file()]
    if missing:
        pytest.skip(f"real JSB data not found: {', '.join(missing)} in {SHARED_JSB} (MUSICDECOMP_SHARED_DATA)")
    return SHARED_JSB


@pytest.fixture(scope="session")
def soundfont() -> Path:
    """FluidR3_GM, a system package that ./setup.sh installs (the tests check its presets' names and sounds)."""
    if not SOUNDFONT.is_file():
        reason = f"{SOUNDFONT} missing: run ./setup.sh as root (apt-get install fluid-soundfont-gm)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI this test must run (setup.sh installs it)")
        pytest.skip(reason)
    return SOUNDFONT


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params([REPO / "params.yaml"])


@pytest.fixture(scope="session")
def tiny_override(tmp_path_factory, jsb_json, jsb16_json) -> Path:
    """With config/tiny.yaml: absolute paths to the synthetic JSB JSON files (the tests run in other folders), with
    no checksum (the params' sha256 are the real files')."""
    path = tmp_path_factory.mktemp("cfg") / "local.yaml"
    path.write_text(yaml.safe_dump({"data": {"jsb": {"source": {"json_path": str(jsb_json), "sha256": None}},
                                             "jsb16": {"source": {"json_path": str(jsb16_json), "sha256": None}}}}))
    return path


@pytest.fixture(scope="session")
def tiny_params(params, tiny_override) -> dict:
    return deep_merge(load_params([REPO / "params.yaml", REPO / "config" / "tiny.yaml"]),
                      yaml.safe_load(tiny_override.read_text()))


DATA_TARGETS = [f"results/data/{d}/{f}" for d in ("jsb_single", "jsb_multi")
                for f in ("train.pt", "valid.pt", "test.pt", "summary.json", "examples.png")]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_override, soundfont) -> Path:
    """The tiny config's data stages run once through Snakemake; returns its work folder."""
    workdir = tmp_path_factory.mktemp("tiny_snakemake")
    snakemake(workdir, "data", configfiles=[REPO / "config" / "tiny.yaml", tiny_override])
    return workdir


def pipeline_root(tmp_path: Path, tiny_run: Path) -> Path:
    """An empty pipeline folder under ``tmp_path`` that sees the tiny run's datasets (as adopt-run's root)."""
    root = tmp_path / "pipeline"
    (root / "results").mkdir(parents=True)
    (root / "results/data").symlink_to(tiny_run / "results/data")
    return root


@pytest.fixture(scope="session")
def tiny_all(tiny_run, tiny_override) -> Path:
    """The whole tiny chain (`all`: data, every MusicSlots variant of the sweep, evaluations, tables) in the
    same work folder. Training jobs ask for a `gpu` resource and 2 threads; on a 2-core CPU, two one-thread
    jobs at a time is faster for these tiny runs."""
    snakemake(tiny_run, "all", "--resources", "gpu=2", "--set-threads", "train_musicslots=1", "train_baseline=1",
              "train_composable=1", "eval_composable=1", "eval_bss_baselines=1",
              configfiles=[REPO / "config" / "tiny.yaml", tiny_override])
    return tiny_run
