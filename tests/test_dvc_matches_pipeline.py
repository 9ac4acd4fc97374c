"""dvc.yaml and the Snakemake rules follow the same step table (src/musicdecomp/pipeline.py) and, for the
MusicSlots sweep, the same list of runs (musicdecomp.sweep)."""

import re
import subprocess
import sys

import yaml

from musicdecomp.pipeline import SPLITS, STEPS
from musicdecomp.sweep import baseline_dir, baseline_runs, musicslots_runs, probe_runs, run_dir

from conftest import REPO, tool_env


def step_of(stage: str) -> str:
    """train_musicslots_slots -> train_musicslots, probe_musicslots_single -> probe: several matrices (DVC)
    or rules (Snakemake) can share one step."""
    while stage not in STEPS:
        assert "_" in stage, stage
        stage = stage.rsplit("_", 1)[0]
    return stage


def dvc_stages(params):
    """Stage name -> stage, with foreach stages expanded over the datasets; matrix stages kept whole."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        if stage.get("foreach") == "${datasets}":
            for ds in params["datasets"]:
                out[(name, ds)] = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${key}", ds))
        elif "foreach" in stage:  # over the splits
            assert stage["foreach"] == list(SPLITS), name
            for split in SPLITS:
                out[(name, None)] = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", split))
        else:
            out[(name, None)] = stage
    return out


def test_every_step_has_a_dvc_stage_and_a_snakemake_rule(params):
    stages = dvc_stages(params)
    assert {step_of(name) for name, _ in stages} == set(STEPS)
    assert {step_of(r) for r in snakemake_rules()} == set(STEPS)


def test_dvc_tracks_the_same_params_and_code(params):
    for (name, ds), stage in dvc_stages(params).items():
        step = STEPS[step_of(name)]
        tracked = [p.split("#")[0].strip() for p in stage.get("params", [])]
        assert tracked == step.dvc_param_keys(ds), name
        code = [d.split("#")[0].strip() for d in stage["deps"] if d.startswith("src/")]
        assert code == step.code_files(), name
        assert stage["cmd"].startswith(f"python -m musicdecomp {step_of(name).replace('_', '-')} ")
        assert "--log logs/" in stage["cmd"]


def snakemake_rules() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    return {m.group(1): text[m.end():].split("\nrule ")[0] for m in re.finditer(r"^rule (\w+):", text, re.M)}


def test_snakemake_rules_call_the_same_entry_points():
    for rule, body in snakemake_rules().items():
        step = step_of(rule)
        assert f'"{{PY}} -m musicdecomp {step.replace("_", "-")} ' in body, rule
        assert f'code("{step}")' in body or step == "mlflow_init", rule


def test_dvc_builds_the_same_runs_as_snakemake(params):
    listing = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=REPO, env=tool_env(),
                             capture_output=True, text=True, check=True).stdout
    outs = set(re.findall(r"(results/musicslots/[^,\s]+)/best\.pt", listing))
    assert outs == {run_dir(d, v, s) for d, v, s in musicslots_runs(params)}
    assert len(outs) == 60 + 15 + 5  # grid (3 masks x 2 strides x 2 x 5 seeds), slot counts, single-instrument
    probes = set(re.findall(r"(results/musicslots/[^,\s]+)/probe\.json", listing))
    assert probes == {run_dir(d, v, s) for d, v, s in probe_runs(params)} and len(probes) == 10
    baselines = set(re.findall(r"(results/baselines/[^,\s]+)/best\.pt", listing))
    assert baselines == {baseline_dir(d, b, s) for d, b, s in baseline_runs(params)} and len(baselines) == 30
