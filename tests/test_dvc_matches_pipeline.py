"""dvc.yaml and the Snakemake rules follow the same step table (src/musicdecomp/pipeline.py)."""

import re

import yaml

from musicdecomp.pipeline import STEPS

from conftest import REPO


def dvc_stages(params):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        if "foreach" in stage:
            assert stage["foreach"] == "${datasets}"
            for ds in params["datasets"]:
                text = yaml.safe_dump(stage["do"]).replace("${key}", ds)
                out[(name, ds)] = yaml.safe_load(text)
        else:
            out[(name, None)] = stage
    return out


def test_every_step_has_a_dvc_stage_and_a_snakemake_rule(params):
    stages = dvc_stages(params)
    assert {name for name, _ in stages} == set(STEPS)
    rules = set(re.findall(r"^rule (\w+):", (REPO / "workflow/rules/data.smk").read_text(), re.M))
    assert rules == set(STEPS)


def test_dvc_tracks_the_same_params_and_code(params):
    for (name, ds), stage in dvc_stages(params).items():
        step = STEPS[name]
        tracked = [p.split("#")[0].strip() for p in stage["params"]]
        assert tracked == step.dvc_param_keys(ds), name
        code = [d for d in stage["deps"] if d.startswith("src/")]
        assert code == step.code_files(), name
        assert stage["cmd"].startswith(f"python -m musicdecomp {name.replace('_', '-')} ")
        assert "--log logs/" in stage["cmd"]


def test_snakemake_rules_call_the_same_entry_points():
    text = (REPO / "workflow/rules/data.smk").read_text()
    for name in STEPS:
        body = text.split(f"rule {name}:")[1].split("\nrule ")[0]
        assert f'"{{PY}} -m musicdecomp {name.replace("_", "-")} --config {{params.cfg:q}}' in body
        assert f'code("{name}")' in body and f'step_params("{name}"' in body
