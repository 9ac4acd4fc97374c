"""The workflow under Snakemake and DVC: end to end on the tiny config, no-op reruns, targeted reruns,
identical outputs from both tools, and bad input failing cleanly."""

import hashlib
import json
import re
import shutil
import sys

import pytest
import torch
import yaml
from conftest import DATA_TARGETS, REPO, run, snakemake

from musicdecomp.config import deep_merge
from musicdecomp.pipeline import CODE_VERSIONS, CODE_VERSIONS_ENV, step_config
from musicdecomp.train.adopt import stage_adoption
from musicdecomp.train.musicslots import train_musicslots

pytestmark = pytest.mark.slow

TARGETS = DATA_TARGETS


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    block = dry_run_stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)
            if m.group(1) != "total"}


def with_report(expected: dict) -> dict:
    """The jobs a change reruns, with the report, which follows every table."""
    tables = ("tables", "eval_codec", "composable_tables", "generation_tables")
    return {**expected, "report": 1} if any(t in expected for t in tables) else expected


def test_tiny_pipeline_builds_everything(tiny_run):
    for t in TARGETS + ["results/data/jsb/chords.csv", "results/data/notes/notes.pt"]:
        assert (tiny_run / t).stat().st_size > 0, t
    for log in ("fetch_jsb", "chords", "render", "features/jsb_multi", "figures/jsb_single"):
        assert "done in" in (tiny_run / f"logs/{log}.log").read_text()
    assert (tiny_run / "results/data/jsb_multi/examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_sweep_trains_every_variant_and_makes_table1(tiny_all, tiny_params):
    from musicdecomp.sweep import baseline_runs, musicslots_runs, probe_runs

    runs = musicslots_runs(tiny_params)
    assert len(runs) == 28  # 12 grid variants + 1 slot count on jsb_multi, 1 on jsb_single; 2 seeds each
    for d, v, s in runs:
        ev = json.loads((tiny_all / f"results/musicslots/{d}/{v}/seed{s}/test.json").read_text())
        assert ev["variant"] == v and ev["seed"] == s and 0.0 <= ev["test"]["miou"] <= 1.0
    md = (tiny_all / "results/tables/table1_musicslots.md").read_text()
    assert md.count("\n| jsb_multi | ") + md.count("\n| jsb_single | ") == 14 and "13.47" in md
    for dataset in ("jsb_multi", "jsb_single"):  # the ground truth scored as slots, from the test evaluations
        assert f"\n| {dataset}: ground-truth notes as slots (the metrics' floor) | | | | | | " in md
    tex = (tiny_all / "results/tables/table1_musicslots.tex").read_text()
    assert tex.count("\njsb\\_") == 14 and "13.47" in tex and tex.count("\\mathbf{") >= 2  # best MSE, best mIoU
    tex2 = (tiny_all / "results/tables/table2_probes.tex").read_text()
    assert tex2.count("\njsb\\_") == 5 and "supervised CNN" in tex2
    t2 = (tiny_all / "results/tables/table2_probes.md").read_text()
    for label in ("| jsb_multi | MusicSlots (none-t1-imp_true-k7), linear probe on slots | 2 |",
                  "| jsb_single | MusicSlots (none-t1-imp_true-k7), linear probe on slots | 2 |",
                  "| jsb_multi | autoencoder, linear probe | 2 |",
                  "| jsb_multi | VAE (KL weight 0.125), linear probe | 2 |",
                  "| jsb_multi | supervised CNN | 2 |"):
        assert label in t2
    import mlflow

    from musicdecomp.train.tracking import PARENT_TAG, STUDIES, SWEEP_TAG

    mlflow.set_tracking_uri(f"sqlite:///{tiny_all}/results/mlflow/mlflow.db")
    # one experiment per study, each with its sweep's parent run; every training run is a child of its study's
    found = mlflow.search_runs(experiment_names=[f"musicdecomp/{s}" for s in STUDIES])
    parents = found[found[f"tags.{SWEEP_TAG}"].notna()]
    assert sorted(parents[f"tags.{SWEEP_TAG}"]) == sorted(STUDIES)
    found = found[found[f"tags.{SWEEP_TAG}"].isna()]
    parent_of = dict(zip(parents["experiment_id"], parents["run_id"]))
    assert (found[f"tags.{PARENT_TAG}"] == found["experiment_id"].map(parent_of)).all()
    assert found["tags.mlflow.source.git.commit"].notna().all() and found["tags.musicdecomp.code_version"].notna().all()
    names = set(found["tags.mlflow.runName"])
    assert {f"{d}/{v}/seed{s}" for d, v, s in runs} <= names
    assert {f"{d}/{b}/seed{s}" for d, b, s in baseline_runs(tiny_params)} <= names
    assert {f"{d}/{v}/seed{s}/probe" for d, v, s in probe_runs(tiny_params)} <= names
    ms = found[found["tags.model"] == "musicslots"]
    assert len(ms) == 28 and ms["metrics.test/miou"].notna().all()
    # the codec side: a trained codec (an MLflow run too), codes for every split, the reconstruction table
    assert "codec/trained" in names
    codec = json.loads((tiny_all / "results/codec/codec.json").read_text())
    assert codec["source"] == "trained" and codec["n_q"] == 2
    for split in ("train", "valid", "test"):
        assert (tiny_all / f"results/codec/codes/{split}.pt").stat().st_size > 0
    table = (tiny_all / "results/tables/codec.md").read_text()
    assert "| EnCodec architecture, trained here | 1.5 | drums_bass | mix |" in table and "4.7" in table
    # composable representations: every variant trained (an MLflow run with its separation metrics), evaluated on the
    # baselines' chunks, and both tables
    comp = found[found["tags.model"] == "composable"]
    assert set(comp["tags.mlflow.runName"]) == {f"composable/drums_bass/{v}/seed0" for v in
                                                 ("mean", "sum", "min", "max", "supervised")}
    assert comp["metrics.test/si_sdr"].notna().all()
    sep = (tiny_all / "results/tables/composable_separation.md").read_text()
    for label in ("ours, mean operator", "ours, max operator", "supervised (same U-Net, true stems)", "HPSS", "NMF",
                  "oracle ideal ratio mask (upper bound)", "mixture as every source (lower bound)"):
        assert f"| drums_bass | {label} | 1 | 2 |" in sep
    ops = (tiny_all / "results/tables/composable_operators.md").read_text()
    assert all(f"| drums_bass | {op} | 1 |" in ops for op in ("mean", "sum", "min", "max"))
    assert {p.name for p in (tiny_all / "results/figures/composable").glob("*.png")} == {
        "separation_drums_bass.png", "si_sdr_vs_loudness_drums_bass.png"}
    # the recomposition prior: two runs (p_mask 0.8 and 1.0), their generations, Tables 4 and 5
    priors = found[found["tags.model"] == "prior"]
    assert set(priors["tags.mlflow.runName"]) == {"composable/drums_bass/prior-p0.8/seed0",
                                                  "composable/drums_bass/prior-p1.0/seed0"}
    gen = (tiny_all / "results/tables/composable_generation.md").read_text()
    assert "| drums_bass | unconditional, p_mask = 1.0 | 1 |" in gen and "not comparable to the paper's FAD" in gen
    div = (tiny_all / "results/tables/composable_diversity.md").read_text()
    assert div.count("| drums_bass | composable/drums_bass/prior-p0.8/seed0 |") == 4


def test_baseline_record_keeps_table2_rows_of_the_runs(tiny_all, tmp_path):
    """benchmarks/baseline_record.py: the CNN runs' per-seed test accuracies and their Table 2 row, the same row
    the pipeline's tables step wrote, in a record that outlives results/."""
    runs = sorted((tiny_all / "results/baselines/jsb_multi/cnn").glob("seed*"))
    assert len(runs) == 2
    run([sys.executable, str(REPO / "benchmarks/baseline_record.py"), *map(str, runs), "--prefix", "cnn",
         "--out", str(tmp_path)], cwd=tmp_path)
    (record,) = tmp_path.glob("cnn_cpu*.json")
    rec = json.loads(record.read_text())
    probes = [json.loads((r / "probe.json").read_text()) for r in runs]
    assert [r["test"] for r in rec["runs"]] == [{k: round(v, 4) for k, v in p["test"].items()} for p in probes]
    assert all(r["validation"] and r["validation"][-1]["step"] <= r["steps"] for r in rec["runs"])
    (row,) = rec["table2_rows"]
    assert (row["model"], row["seeds"]) == ("cnn", 2)
    line = next(ln for ln in (tiny_all / "results/tables/table2_probes.md").read_text().splitlines()
                if "supervised CNN" in ln)
    assert line in record.with_suffix(".md").read_text()


def test_second_run_does_nothing(tiny_all, tiny_override):
    proc = snakemake(tiny_all, "all", configfiles=[REPO / "config/tiny.yaml", tiny_override])
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.parametrize("change, expected", [
    ({"figures": {"seed": 5}}, {"figures": 2, "all": 1}),
    ({"data": {"mel": {"mask_db": -40.0}}},
     {"features": 2, "figures": 2, "train_musicslots": 28, "eval_musicslots": 28, "probe_musicslots": 4,
      "train_baseline": 6, "probe_baseline": 6, "tables": 1, "all": 1}),
    ({"datasets": {"jsb_single": {"seed": 2}}},
     {"features": 1, "figures": 1, "train_musicslots": 2, "eval_musicslots": 2, "probe_musicslots": 2,
      "tables": 1, "all": 1}),
    ({"musicslots": {"train": {"lr": 1e-3}}},
     {"train_musicslots": 28, "eval_musicslots": 28, "probe_musicslots": 4, "tables": 1, "all": 1}),
    ({"musicslots": {"eval": {"iters": 3}}}, {"eval_musicslots": 28, "tables": 1, "all": 1}),
    ({"musicslots": {"sweep": {"seeds": [0, 1, 2]}}},
     {"train_musicslots": 14, "eval_musicslots": 14, "probe_musicslots": 2, "tables": 1, "all": 1}),
    ({"baselines": {"cnn": {"train": {"lr": 1e-4}}}},
     {"train_baseline": 2, "probe_baseline": 2, "tables": 1, "all": 1}),
    ({"probe": {"train": {"lr": 1e-4}}}, {"probe_musicslots": 4, "probe_baseline": 6, "tables": 1, "all": 1}),
    ({"tracking": {"experiment": "other"}}, {}),
    ({"codec": {"eval": {"seed": 3}}}, {"eval_codec": 1, "all": 1}),
    ({"codec": {"encode_batch": 3}}, {"cache_codes": 3, "eval_codec": 1, "train_composable": 5, "eval_composable": 5, "eval_bss_baselines": 1, "composable_tables": 1, "train_prior": 2, "eval_generation": 2, "generation_tables": 1, "all": 1}),
    ({"codec": {"trained": {"l1_weight": 0.5}}}, {"codec": 1, "cache_codes": 3, "eval_codec": 1, "train_composable": 5, "eval_composable": 5, "eval_bss_baselines": 1, "composable_tables": 1, "train_prior": 2, "eval_generation": 2, "generation_tables": 1, "all": 1}),
    # composable representations: training, sampling, the test chunks and the baselines each rerun what they feed
    ({"composable": {"train": {"lr": 3.0e-4}}}, {"train_composable": 5, "eval_composable": 5, "composable_tables": 1,
                                                   "train_prior": 2, "eval_generation": 2, "generation_tables": 1, "all": 1}),
    ({"composable": {"prior": {"train": {"lr": 3.0e-4}}}}, {"train_prior": 2, "eval_generation": 2, "generation_tables": 1, "all": 1}),
    ({"composable": {"prior": {"eval": {"variations": 2}}}}, {"eval_generation": 2, "generation_tables": 1, "all": 1}),
    ({"composable": {"eval": {"sample_steps": 3}}}, {"eval_composable": 5, "composable_tables": 1, "all": 1}),
    ({"composable": {"eval": {"seed": 4}}}, {"eval_composable": 5, "eval_bss_baselines": 1, "composable_tables": 1,
                                               "all": 1}),
    ({"composable": {"baselines": {"nmf_components": 3}}}, {"eval_bss_baselines": 1, "composable_tables": 1, "all": 1}),
    ({"composable": {"variants": ["mean", "sum"]}}, {"composable_tables": 1, "all": 1}),
])
def test_a_param_change_reruns_only_what_depends_on_it(tiny_all, tiny_override, tmp_path, change, expected):
    extra = tmp_path / "change.yaml"
    extra.write_text(yaml.safe_dump(change))
    proc = snakemake(tiny_all, "all", "-n", configfiles=[REPO / "config/tiny.yaml", tiny_override, extra])
    assert (job_counts(proc.stdout) if expected else {}) == with_report(expected), proc.stdout[-2000:]


@pytest.mark.parametrize("step, expected", [
    ("figures", {"figures": 2, "all": 1}),
    ("eval_composable", {"eval_composable": 5, "composable_tables": 1, "all": 1}),
    ("features", {"features": 2, "figures": 2, "train_musicslots": 28, "eval_musicslots": 28, "probe_musicslots": 4,
                  "train_baseline": 6, "probe_baseline": 6, "tables": 1, "all": 1}),
])
def test_a_code_version_bump_reruns_that_step_and_what_follows(tiny_all, tiny_override, tmp_path, step, expected):
    """A step's code version (workflow/code_versions.yaml) is part of what reruns it; a docstring edit changes no
    version (tests/test_pipeline_table.py), so it reruns nothing."""
    lock = yaml.safe_load((REPO / CODE_VERSIONS).read_text())
    lock["steps"][step]["version"] += 1
    (tmp_path / "versions.yaml").write_text(yaml.safe_dump(lock))
    proc = snakemake(tiny_all, "all", "-n", configfiles=[REPO / "config/tiny.yaml", tiny_override],
                     env={CODE_VERSIONS_ENV: str(tmp_path / "versions.yaml")})
    assert job_counts(proc.stdout) == with_report(expected), proc.stdout[-2000:]


@pytest.mark.parametrize("change, expected", [
    ({"data": {"render": {"velocity": 80}}}, {"render": 1, "features": 2, "figures": 2}),
    ({"data": {"jsb": {"chords": {"seed": 1}}}}, {"chords": 1, "render": 1, "features": 2, "figures": 2}),
    ({"datasets": {"jsb_multi": {"assignments_per_chord": 2}}}, {"features": 1, "figures": 1}),
])
def test_a_data_param_change_reruns_only_the_data_it_touches(tiny_run, tiny_override, tmp_path, change, expected):
    extra = tmp_path / "change.yaml"
    extra.write_text(yaml.safe_dump(change))
    proc = snakemake(tiny_run, *TARGETS, "-n", configfiles=[REPO / "config/tiny.yaml", tiny_override, extra])
    assert job_counts(proc.stdout) == expected


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


DVC = [sys.executable, "-m", "dvc"]


def dvc_project(proj, params):
    """A copy of the project (dvc.yaml, the code versions, src/) with ``params`` as its params.yaml, DVC initialised
    (no git)."""
    proj.mkdir()
    shutil.copy(REPO / "dvc.yaml", proj)
    (proj / "workflow").mkdir()
    shutil.copy(REPO / CODE_VERSIONS, proj / CODE_VERSIONS)
    shutil.copytree(REPO / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(DVC + ["init", "--no-scm", "-q"], cwd=proj)
    return proj


def test_dvc_repro_produces_the_same_files(tiny_run, tiny_params, tmp_path):
    """dvc repro in a copy of the project (params = params.yaml + tiny override) equals Snakemake's output."""
    proj = dvc_project(tmp_path / "proj", tiny_params)
    data_stages = [f"figures@{d}" for d in ("jsb_single", "jsb_multi")]  # and everything upstream
    run(DVC + ["repro", "-q", *data_stages], cwd=proj)
    for t in TARGETS + ["results/data/jsb/chords.csv", "results/data/notes/notes.pt"]:
        if t.endswith(".png"):
            assert (proj / t).stat().st_size > 0
        else:
            assert sha(proj / t) == sha(tiny_run / t), t
    assert "up to date" in run(DVC + ["status", *data_stages], cwd=proj).stdout
    # one MusicSlots run (train + eval) through its DVC stages, MLflow database included
    run(DVC + ["repro", "-q", "eval_musicslots_single@jsb_single-0"], cwd=proj)
    ev = json.loads((proj / "results/musicslots/jsb_single/none-t1-imp_true-k7/seed0/test.json").read_text())
    assert ev["run_name"] == "jsb_single/none-t1-imp_true-k7/seed0" and ev["test"]["examples"] > 0
    assert (proj / "results/mlflow/mlflow.db").is_file()
    # a run trained elsewhere, adopted: its DVC stage publishes it instead of training, and DVC tracks it
    src = tmp_path / "gpu/run"
    train_musicslots(step_config(tiny_params, "train_musicslots", "jsb_single", "none-t1-imp_true-k7", 1),
                     proj / "results/data/jsb_single", src, device="cpu", threads=1)
    stage_adoption(src, tiny_params, step_config, root=proj)
    run(DVC + ["repro", "-q", "train_musicslots_single@jsb_single-1"], cwd=proj)
    adopted = json.loads((proj / "results/musicslots/jsb_single/none-t1-imp_true-k7/seed1/train.json").read_text())
    assert adopted["adopted"]["from"] == str(src.resolve()) and adopted["mlflow_run_id"]
    assert "up to date" in run(DVC + ["status", "train_musicslots_single@jsb_single-1"], cwd=proj).stdout
    # one param changed: only the stages that depend on it are out of date
    changed = deep_merge(tiny_params, {"figures": {"seed": 5}})
    (proj / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    status = run(DVC + ["status", "--json", *data_stages, "eval_musicslots_single@jsb_single-0"], cwd=proj).stdout
    assert set(yaml.safe_load(status)) == {"figures@jsb_single", "figures@jsb_multi"}
    # a step's code version bumped: its stages are out of date, and only they (DVC reruns what follows on repro)
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    lock = yaml.safe_load((proj / CODE_VERSIONS).read_text())
    lock["steps"]["eval_musicslots"]["version"] += 1
    (proj / CODE_VERSIONS).write_text(yaml.safe_dump(lock))
    status = run(DVC + ["status", "--json", *data_stages, "eval_musicslots_single@jsb_single-0"], cwd=proj).stdout
    assert set(yaml.safe_load(status)) == {"eval_musicslots_single@jsb_single-0"}


def test_dvc_repro_builds_the_codec_side_like_snakemake(tiny_all, tiny_params, tmp_path):
    """The stems -> codec -> codes -> table chain through DVC (foreach over the splits) gives Snakemake's files."""
    proj = dvc_project(tmp_path / "proj", tiny_params)
    run(DVC + ["repro", "-q", "eval_codec", "cache_codes@train"], cwd=proj)
    assert sha(proj / "results/stems/jsb/test.json") == sha(tiny_all / "results/stems/jsb/test.json")
    # the same trained codec (its weights' sha256) and the same codes (the files differ only in wall times)
    assert (json.loads((proj / "results/codec/codec.json").read_text())["sha256"]
            == json.loads((tiny_all / "results/codec/codec.json").read_text())["sha256"])
    for split in ("train", "test"):
        a, b = (torch.load(root / f"results/codec/codes/{split}.pt", weights_only=True) for root in (proj, tiny_all))
        assert torch.equal(a["positions"], b["positions"]) and a["classes"].keys() == b["classes"].keys()
        assert all(torch.equal(a["classes"][c], b["classes"][c]) for c in a["classes"])
        assert all(torch.equal(a["subsets"][s]["mix"], b["subsets"][s]["mix"]) for s in a["subsets"])
    assert (proj / "results/tables/codec.md").read_text() == (tiny_all / "results/tables/codec.md").read_text()
    assert "up to date" in run(DVC + ["status", "eval_codec", "cache_codes@train"], cwd=proj).stdout
    # and on to the separations: the baselines score the same chunks alike, a model run is evaluated on them too
    stages = ["eval_bss_baselines@drums_bass", "eval_composable@drums_bass-mean-0"]
    run(DVC + ["repro", "-q", *stages], cwd=proj)
    ours, theirs = (json.loads((root / "results/composable/drums_bass/baselines/separation.json").read_text())
                    for root in (proj, tiny_all))
    assert ours["chunks"] == theirs["chunks"] and ours["methods"].keys() == theirs["methods"].keys()
    for m in ours["methods"]:
        assert ours["methods"][m]["per_chunk"]["raw"]["si_sdr"] == theirs["methods"][m]["per_chunk"]["raw"]["si_sdr"]
    mean = json.loads((proj / "results/composable/drums_bass/mean/seed0/separation.json").read_text())
    assert mean["chunks"] == ours["chunks"] and mean["kind"] == "composable"
    # the prior of that run, through its DVC stages: trained on its encoder's latents, generating on the same chunks
    stages.append("eval_generation@drums_bass-0.8-0")
    run(DVC + ["repro", "-q", stages[-1]], cwd=proj)
    gen = json.loads((proj / "results/composable/drums_bass/prior-p0.8/seed0/generation.json").read_text())
    assert gen["decomposition"] == "composable/drums_bass/mean/seed0" and gen["chunks"] == ours["chunks"]
    assert "up to date" in run(DVC + ["status", *stages], cwd=proj).stdout


def test_bad_input_fails_cleanly_under_snakemake(tmp_path, tiny_override):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"render": {"soundfont": "/nowhere/FluidR3_GM.sf2"}}}))
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "results/data/notes/notes.pt",
                     configfiles=[REPO / "config/tiny.yaml", tiny_override, bad], check=False)
    assert proc.returncode != 0
    assert ("musicdecomp render: error: soundfont /nowhere/FluidR3_GM.sf2 does not exist; install it "
            "(apt-get install fluid-soundfont-gm") in proc.stderr
    assert not (work / "results/data/notes/notes.pt").exists()
    assert not list((work / "results/data/notes").glob(".*tmp*"))
    assert "error: soundfont" in (work / "logs/render.log").read_text()


def test_out_of_range_param_stops_snakemake_before_any_job(tmp_path, tiny_override):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"mel": {"n_mels": -3}}}))
    proc = snakemake(tmp_path, "all", "-n", configfiles=[REPO / "config/tiny.yaml", tiny_override, bad],
                     check=False)
    assert proc.returncode != 0
    assert "params: parameter data.mel.n_mels = -3 is out of range" in proc.stderr + proc.stdout
