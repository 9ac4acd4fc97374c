"""Shared fixtures: the repository, the JSB JSON from ../shared, tiny parameter sets, tiny pipeline runs."""

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
import yaml

from musicdecomp.config import deep_merge, load_params

REPO = Path(__file__).resolve().parents[1]
SHARED_JSB = REPO.parent / "shared" / "data" / "jsb-chorales"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


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


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def snakemake(workdir: Path, *args: str, configfiles: list[Path] = (), check: bool = True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", "none"]
    cmd += list(args)
    if configfiles:  # last: --configfile takes every argument after it
        cmd += ["--configfile", *map(str, configfiles)]
    return run(cmd, cwd=workdir, check=check)


@pytest.fixture(scope="session")
def jsb_json() -> Path:
    path = SHARED_JSB / "jsb-chorales-quarter.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (the tests read the JSB JSON from ../shared)")
    return path


@pytest.fixture(scope="session")
def soundfont() -> Path:
    if not SOUNDFONT.is_file():
        pytest.skip(f"{SOUNDFONT} missing: run ./setup.sh as root (apt-get install fluid-soundfont-gm)")
    return SOUNDFONT


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params([REPO / "params.yaml"])


@pytest.fixture(scope="session")
def tiny_override(tmp_path_factory, jsb_json) -> Path:
    """config/tiny.yaml plus absolute paths to the JSB JSON files (the tests run in other folders)."""
    path = tmp_path_factory.mktemp("cfg") / "local.yaml"
    jsb16 = SHARED_JSB / "Jsb16thSeparated.json"
    path.write_text(yaml.safe_dump({"data": {"jsb": {"source": {"json_path": str(jsb_json)}},
                                             "jsb16": {"source": {"json_path": str(jsb16)}}}}))
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
              configfiles=[REPO / "config" / "tiny.yaml", tiny_override])
    return tiny_run
