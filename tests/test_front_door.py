"""The front door: what each GPU-scale job does where it runs (train, use a released run, or record that it was
not trained here with its cost), how the records reach the tables, releasing a run, and the results report."""

import copy
import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import REPO, pipeline_root

from musicdecomp import compute
from musicdecomp.compute import NOT_TRAINED, RELEASE, SKIP, TRAIN, decide, job_cost, label
from musicdecomp.eval.musicslots import evaluate_run
from musicdecomp.eval.report import build_report, markdown_table
from musicdecomp.eval.tables import table1
from musicdecomp.pipeline import code_id, code_version, planned_version, step_config
from musicdecomp.sweep import run_dir
from musicdecomp.train.musicslots import train_musicslots
from musicdecomp.train.release import gate, parse_plan, release_run

VARIANT = "none-t2-imp_true-k3"


def with_compute(params: dict, **kw) -> dict:
    p = copy.deepcopy(params)
    p["compute"].update(kw)
    return p


def test_the_cost_model_reads_the_benchmark_figures(params, tiny_params):
    paper = job_cost("train_musicslots", step_config(params, "train_musicslots", "jsb_multi", "none-t1-imp_true-k7", 0),
                     params)
    fig = compute.costs()["steps"]["musicslots"]
    assert paper["gpu_measured"] and paper["gpu_minutes"] == pytest.approx(100_000 * fig["gpu"][1] / 60)
    assert paper["cpu_minutes"] == pytest.approx(100_000 * fig["cpu"][1] / 60)
    vae = job_cost("train_baseline", step_config(params, "train_baseline", "jsb_multi", "vae-kl0.0", 0), params)
    assert not vae["gpu_measured"] and vae["gpu_minutes"] < vae["cpu_minutes"] / 100  # from MusicSlots' ratio
    # every job of the tiny config fits the default CPU allowance, so the tiny chain trains on any machine
    for step, run in (("train_musicslots", ("jsb_multi", VARIANT, 0)), ("train_composable", ("drums_bass", "mean", 0)),
                      ("train_prior", ("drums_bass", 0.8, 0)), ("codec", ())):
        cost = job_cost(step, step_config(tiny_params, step, *run), tiny_params)
        assert cost["cpu_minutes"] <= tiny_params["compute"]["cpu_minutes"], step
    # a pretrained codec costs nothing to decide about
    assert job_cost("codec", {"source": "pretrained"}, params) is None


def test_each_job_trains_uses_a_release_or_is_skipped(params, tmp_path, monkeypatch):
    cfg = step_config(params, "train_musicslots", "jsb_multi", "none-t1-imp_true-k7", 0)
    monkeypatch.setenv(compute.RELEASES_ENV, str(tmp_path / "releases"))
    no_gpu = with_compute(params, gpu=False)
    assert decide("train_musicslots", cfg, no_gpu)["action"] == SKIP
    assert decide("train_musicslots", cfg, with_compute(params, gpu=True))["action"] == TRAIN
    assert decide("train_musicslots", cfg, with_compute(no_gpu, cpu_minutes=1e9))["action"] == TRAIN
    # a run trained here stays trained whatever the machine has; a not-trained record does not count
    summary = tmp_path / "train.json"
    summary.write_text(json.dumps({"steps": 100000}))
    assert decide("train_musicslots", cfg, no_gpu, summary)["action"] == TRAIN
    summary.write_text(json.dumps({NOT_TRAINED: {"run": "x"}}))
    assert decide("train_musicslots", cfg, no_gpu, summary)["action"] == SKIP
    # a release of this configuration and code version is used, unless released: retrain
    (tmp_path / "releases").mkdir()
    entry = {"step": "train_musicslots", "run": cfg["run_name"], "path": "x", "config_hash": compute.config_hash(cfg),
             "code_version": 1}
    (tmp_path / "releases/manifest.yaml").write_text(json.dumps({"runs": [entry]}))
    compute._manifest.cache_clear()
    assert decide("train_musicslots", cfg, no_gpu, None, 1)["action"] == RELEASE
    assert decide("train_musicslots", cfg, no_gpu, None, 2)["action"] == SKIP  # another code version
    other = {**cfg, "train": {**cfg["train"], "lr": 1.0}}
    assert decide("train_musicslots", other, no_gpu, None, 1)["action"] == SKIP  # other parameters
    assert decide("train_musicslots", cfg, with_compute(no_gpu, released="retrain"), None, 1)["action"] == SKIP
    compute._manifest.cache_clear()


def test_snakemake_hands_the_decision_and_the_cost_to_the_job(params):
    wc = {"dataset": "jsb_multi", "variant": "none-t1-imp_true-k7", "seed": "0"}
    version = code_version("train_musicslots")
    assert planned_version(with_compute(params, gpu=True), "train_musicslots", wc) == version  # unchanged: no rerun
    plan = planned_version(with_compute(params, gpu=False), "train_musicslots", wc)
    assert plan.startswith(f"{version} skip ")
    decision = parse_plan(plan)
    cost = job_cost("train_musicslots", step_config(params, "train_musicslots", *wc.values()), params)
    assert decision["action"] == SKIP and decision["cost"]["gpu_minutes"] == pytest.approx(cost["gpu_minutes"], abs=0.1)
    assert parse_plan(str(version)) == {"action": TRAIN, "cost": None, "why": "planned"}
    assert parse_plan(None) is None


def test_a_skipped_run_writes_its_record_and_the_tables_say_what_it_costs(tiny_params, tmp_path):
    cfg = step_config(tiny_params, "train_musicslots", "jsb_multi", VARIANT, 0)
    plan = {"action": SKIP, "cost": {"gpu_minutes": 31.0, "cpu_minutes": 14000.0, "gpu_measured": True},
            "why": "no GPU"}
    run = tmp_path / "results/musicslots/jsb_multi" / VARIANT / "seed0"
    summary = train_musicslots(cfg, tmp_path / "nowhere", run, compute={"plan": plan, "params": None})
    record = summary[NOT_TRAINED]
    assert json.loads((run / "train.json").read_text()) == {NOT_TRAINED: record}
    assert compute.record_in(run / "best.pt") == record  # a placeholder, not a model
    assert label(record) == "not trained here: needs a GPU (about 31 GPU-minutes)"
    # the evaluation passes it on; Table 1 prints a row with the cost beside a row that was trained
    from musicdecomp.cli import main

    assert main(["eval-musicslots", "--config", json.dumps(step_config(tiny_params, "eval_musicslots")),
                 "--run-dir", str(run), "--data-dir", str(tmp_path), "--out", str(run / "test.json"),
                 "--figure", str(run / "test_examples.png"), "--audio-dir", str(run / "test_audio")]) == 0
    assert compute.record_in(run / "test.json")["upstream"] == cfg["run_name"]
    assert (run / "test_examples.png").read_bytes()[:4] == b"\x89PNG"
    done = tmp_path / "results/musicslots/jsb_multi/none-t1-imp_true-k7/seed0/test.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"dataset": "jsb_multi", "variant": "none-t1-imp_true-k7", "seed": 0, "best_step": 4,
                                "model": {"mask": "none", "time_stride": 1, "implicit": True, "num_slots": 7},
                                "test": {"note_mse": 10.0, "miou": 0.9}}))
    table1([done, run / "test.json"], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    md = (tmp_path / "t.md").read_text()
    assert "| jsb_multi | none | 1 | yes | 7 | 1 | 10.00 | 0.900 | trained here |" in md
    assert "| jsb_multi | none | 2 | yes | 3 | 0 | — | — | not trained here: needs a GPU (about 31 GPU-minutes) |" in md
    assert "about 31 GPU-minutes" in (tmp_path / "t.tex").read_text()


def test_a_released_run_is_published_and_its_evaluation_used(tiny_run, tiny_params, tmp_path, monkeypatch):
    """release-run ships a finished run compactly; a job that may not train here publishes it instead, and its
    evaluation is the one computed where it trained (compute.reevaluate: true evaluates it here)."""
    monkeypatch.setenv(compute.RELEASES_ENV, str(tmp_path / "releases"))
    data = tiny_run / "results/data/jsb_multi"
    cfg = step_config(tiny_params, "train_musicslots", "jsb_multi", VARIANT, 0)
    gpu = tmp_path / "gpu" / VARIANT
    train_musicslots(cfg, data, gpu, device="cpu", threads=1, code=code_id("train_musicslots"))
    evaluate_run(gpu, data, gpu / "test.json", gpu / "test_examples.png", device="cpu", audio_dir=gpu / "test_audio")
    data_id = json.loads((data / "summary.json").read_text())["source_id"]
    ev = step_config(tiny_params, "eval_musicslots")
    made = {"eval_musicslots": ({k: v for k, v in ev.items() if k != "compute.reevaluate"},
                                code_version("eval_musicslots"))}
    entry = release_run(gpu, "train_musicslots", cfg, data_id, code_version("train_musicslots"), "abc1234",
                        evaluations=made)
    rel = tmp_path / "releases" / entry["path"]
    best = torch.load(rel / "best.pt", weights_only=False)
    assert all(v.dtype == torch.float16 for v in best["model"].values() if v.is_floating_point())
    assert "optimizer" not in best and list(entry["evaluations"]) == ["eval_musicslots"]
    assert entry["metrics"]["miou"] == json.loads((gpu / "test.json").read_text())["test"]["miou"]
    compute._manifest.cache_clear()

    root = pipeline_root(tmp_path, tiny_run)
    dst = root / run_dir("jsb_multi", VARIANT, 0)
    params = with_compute(tiny_params, gpu=False, cpu_minutes=0)
    summary = train_musicslots(cfg, data, dst, device="cpu", threads=1, code=code_id("train_musicslots"),
                               compute={"plan": None, "params": params})
    assert summary["adopted"]["release"]["commit"] == "abc1234" and summary["steps"] == cfg["train"]["steps"]
    shipped = torch.load(dst / "best.pt", weights_only=False)["model"]
    assert all(torch.equal(shipped[k], v) for k, v in best["model"].items())
    from musicdecomp.cli import main

    args = ["eval-musicslots", "--run-dir", str(dst), "--data-dir", str(data), "--out", str(dst / "test.json"),
            "--figure", str(dst / "test_examples.png"), "--audio-dir", str(dst / "test_audio")]
    assert main([*args, "--config", json.dumps(ev)]) == 0
    assert (dst / "test.json").read_bytes() == (gpu / "test.json").read_bytes()  # shipped, not recomputed
    assert sorted(p.name for p in (dst / "test_audio").iterdir()) == sorted(p.name for p in (gpu / "test_audio").iterdir())
    other = {**ev, "musicslots.eval": {**ev["musicslots.eval"], "iters": 3}}  # other evaluation settings
    assert main([*args, "--config", json.dumps(other)]) == 0
    assert json.loads((dst / "test.json").read_text())["test_iters"] == 3  # evaluated here
    (dst / "test.json").unlink()
    assert main([*args, "--config", json.dumps({**ev, "compute.reevaluate": True})]) == 0
    again = json.loads((dst / "test.json").read_text())  # evaluated here from the half-precision weights
    assert again["test"]["miou"] == pytest.approx(entry["metrics"]["miou"], abs=0.05)
    compute._manifest.cache_clear()


def test_a_planned_release_that_is_gone_fails_in_one_line(tiny_params, tmp_path, monkeypatch):
    monkeypatch.setenv(compute.RELEASES_ENV, str(tmp_path / "none"))
    compute._manifest.cache_clear()
    cfg = step_config(tiny_params, "train_musicslots", "jsb_multi", VARIANT, 0)
    with pytest.raises(Exception, match="planned to use its released run.*plan the workflow again"):
        gate("train_musicslots", cfg, tmp_path / "run", {"plan": {"action": RELEASE}, "params": None},
             {"version": "1"})


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page, screenshot=None) -> dict:
    """Open the page in headless Chromium; the counts its script wrote on <body> (and a screenshot)."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--virtual-time-budget=15000", "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    import re

    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*flags, "--window-size=1280,3000", f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)
    return found


def test_markdown_tables_become_html_tables():
    html = markdown_table("Table 9: x\n\n| a | b |\n|---|---|\n| 1 | not trained here: needs a GPU |\n\nnote\n\n- one\n")
    assert html.count("<table>") == 1 and "<th>a</th>" in html and "<td class=missing>not trained here" in html
    assert "<p>note</p>" in html and "<li>one</li>" in html


def test_the_report_shows_tables_figures_audio_and_what_is_missing(tmp_path):
    """A results folder with one trained run (curves, figure, audio) and one not-trained record: the page shows
    both, and in a browser every image and audio element loads."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    res = tmp_path / "results"
    (res / "tables").mkdir(parents=True)
    (res / "tables/table1_musicslots.md").write_text("Table 1\n\n| dataset | note MSE |\n|---|---|\n| jsb_multi | 10.0 |\n")
    run = res / "musicslots/jsb_multi/none-t1-imp_true-k7/seed0"
    (run / "test_audio").mkdir(parents=True)
    (run / "train.json").write_text(json.dumps({"steps": 4}))
    for name in ("curves.png", "test_examples.png"):
        Image.new("RGB", (40, 30), "white").save(run / name)
    sf.write(run / "test_audio/chord0.wav", np.zeros(1600, dtype=np.float32), 16000)
    skipped = res / "musicslots/jsb_multi/none-t2-imp_true-k7/seed0"
    skipped.mkdir(parents=True)
    (skipped / "train.json").write_text(json.dumps({NOT_TRAINED: {
        "step": "train_musicslots", "run": "jsb_multi/none-t2-imp_true-k7/seed0", "gpu_minutes": 30.0,
        "own_gpu_minutes": 30.0, "gpu_measured": True, "job": True}}))
    page = res / "report/index.html"
    counts = build_report({"figure_runs": 4, "audio_runs": 2}, res, page)
    assert counts == {"tables": 2, "images": 2, "audio": 1, "not_trained": 1}  # table 1, the list of the missing
    text = page.read_text()
    assert "jsb_multi/none-t2-imp_true-k7/seed0" in text and "about 30 GPU-minutes" in text
    assert 'src="../musicslots/jsb_multi/none-t1-imp_true-k7/seed0/test_audio/chord0.wav"' in text
    found = render(page)
    assert found["checked"] == "1" and found["images"] == "2/2" and found["audio"] == "1/1"
    assert int(found["tables"]) == counts["tables"]


@pytest.mark.slow
def test_the_report_of_the_tiny_chain_loads_in_a_browser(tiny_all):
    """The tiny `all` builds the report; every table, figure and audio element of it loads in Chromium. Its
    screenshot is kept under results/ (a CI artifact)."""
    page = tiny_all / "results/report/index.html"
    found = render(page, REPO / "results/ci/report_tiny.png")
    shown, audio = found["images"].split("/"), found["audio"].split("/")
    assert shown[0] == shown[1] and int(shown[1]) >= 10
    assert audio[0] == audio[1] and int(audio[1]) >= 10
    assert int(found["tables"]) >= 8
    assert (REPO / "results/ci/report_tiny.png").read_bytes()[:4] == b"\x89PNG"


SMALL = {"musicslots": {"sweep": {"seeds": [0], "num_slots": [], "single_instrument": [],
                                  "grid": {"mask": ["none"], "time_stride": [2], "implicit": [True]}}},
         "probe": {"musicslots_variants": ["none-t2-imp_true-k7"]},
         "baselines": {"seeds": [0], "vae": {"kld_weights": [0.0]}},
         "composable": {"variants": ["mean"], "prior": {"p_masks": [0.8]}}}


@pytest.mark.slow
def test_all_without_a_gpu_finishes_with_every_table_and_dvc_agrees(tiny_all, tiny_params, tiny_override, tmp_path):
    """`all` where nothing may train (no GPU, no CPU allowance): it says so once at the start with the total, every
    table is built with rows that say what they would cost, the report lists them, and DVC builds the same tables.
    A GPU appearing then reruns exactly the jobs that were not trained."""
    import yaml
    from conftest import run, snakemake
    from test_workflow import DVC, dvc_project, job_counts

    from musicdecomp.config import deep_merge

    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    for folder in ("data", "stems"):  # built by the tiny chain already: this test is about what comes after
        (work / "results" / folder).symlink_to(tiny_all / "results" / folder)
    no_gpu = {**SMALL, "compute": {"gpu": False, "cpu_minutes": 0}}
    override = tmp_path / "no_gpu.yaml"
    override.write_text(yaml.safe_dump(no_gpu))
    configs = [REPO / "config/tiny.yaml", tiny_override, override]
    proc = snakemake(work, "all", configfiles=configs)
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("musicdecomp: ")]
    assert len(said) == 1 and "9 GPU-scale job(s) will not run here" in said[0] and "GPU-minute" in said[0]
    t1 = (work / "results/tables/table1_musicslots.md").read_text()
    assert "| jsb_multi | none | 2 | yes | 7 | 0 | — | — | not trained here: needs a GPU (about 1 GPU-minute) |" in t1
    t2 = (work / "results/tables/table2_probes.md").read_text()
    assert "| jsb_multi | supervised CNN | 0 | — | — | — | not trained here: needs a GPU" in t2
    for name in ("codec", "composable_separation", "composable_generation"):
        assert "not trained here" in (work / f"results/tables/{name}.md").read_text() or \
            "not computed here" in (work / f"results/tables/{name}.md").read_text(), name
    report = (work / "results/report/index.html").read_text()
    assert "9 GPU-scale job(s) were not trained here" in report
    # DVC, deciding in each job from params.yaml, builds the same tables
    proj = dvc_project(tmp_path / "proj", deep_merge(tiny_params, no_gpu))
    (proj / "results").mkdir()  # a copy: DVC, without a lock of its own, rebuilds the data it finds
    shutil.copytree(tiny_all / "results/data", proj / "results/data")
    run(DVC + ["repro", "-q", "tables"], cwd=proj)
    for name in ("table1_musicslots", "table2_probes"):
        assert (proj / f"results/tables/{name}.md").read_text() == (work / f"results/tables/{name}.md").read_text()
    # a GPU appears: only the skipped jobs and what follows them would run; nothing else
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text(yaml.safe_dump({**SMALL, "compute": {"gpu": True, "cpu_minutes": 0}}))
    counts = job_counts(snakemake(work, "all", "-n", configfiles=[*configs[:2], gpu]).stdout)
    assert counts["train_musicslots"] == 1 and counts["train_baseline"] == 2 and counts["codec"] == 1
    assert counts["cache_codes"] == 3 and counts["train_composable"] == 1 and counts["train_prior"] == 1
    assert "stems" not in counts and "features" not in counts
