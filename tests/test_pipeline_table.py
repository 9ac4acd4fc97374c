"""The step table behind both workflow tools: dvc.yaml is what it writes, every rule takes its files from it,
the code versions are current, and the package's imports point one way."""

import re
import subprocess
import sys

import pytest
from conftest import REPO, tool_env

from musicdecomp.pipeline import (
    CODE_VERSIONS,
    RULES,
    STEPS,
    code_closure,
    dvc_yaml,
    package_imports,
    read_code_versions,
    source_hash,
    stale_code,
)
from musicdecomp.sweep import baseline_dir, baseline_runs, musicslots_runs, probe_runs, run_dir


def test_dvc_yaml_is_what_the_table_writes():
    assert (REPO / "dvc.yaml").read_text() == dvc_yaml(), "run `python -m musicdecomp write-dvc` and commit dvc.yaml"


def snakemake_rules() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    return {m.group(1): text[m.end():].split("\nrule ")[0] for m in re.finditer(r"^rule (\w+):", text, re.M)}


def test_every_rule_of_the_table_is_a_snakemake_rule_that_takes_its_files_from_it():
    rules = snakemake_rules()
    assert set(rules) == set(RULES)
    for name, body in rules.items():
        for directive in ("input: **inputs", "output: **outputs", "params: **params", "log: step_log",
                          "shell: command"):
            assert f'{directive}("{name}")' in body, (name, directive)


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


def test_dvc_stages_track_each_steps_params_and_code_version():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        rule = name if name in RULES else name.rsplit("_", 1)[0]
        step, _ = RULES[rule]
        assert body["cmd"].startswith(f"python -m musicdecomp {step.command} ") and "--log logs/" in body["cmd"]
        assert {CODE_VERSIONS: [f"steps.{step.name}.version"]} in body["params"]
        assert not any(str(d).startswith("src/") for d in body.get("deps", []))  # code reruns by version only


def test_the_code_versions_are_current():
    """Fails when a step's code changed and its version was not bumped (nor the change declared harmless)."""
    stale = stale_code(read_code_versions())
    assert not stale, (f"the code of {sorted(stale)} changed ({stale}): `python -m musicdecomp code-versions --update "
                       f"--bump <step>` if what it computes changed, else `--same-results <step>`")


def test_a_docstring_or_comment_edit_is_not_a_code_change_and_a_computing_edit_is():
    src = 'def f(x):\n    """Double it."""\n    return 2 * x  # twice\n'
    assert source_hash(src) == source_hash('def f(x):\n    """Twice x, in other words."""\n    return 2 * x\n')
    assert source_hash(src) == source_hash("def f(x):\n    return 2 * x\n")
    assert source_hash(src) != source_hash('def f(x):\n    """Double it."""\n    return 3 * x\n')


def test_a_step_s_code_is_the_closure_of_its_module():
    mel = "musicdecomp.data.mel"
    assert mel in code_closure(STEPS["train_musicslots"].module)  # training computes the mel conversions
    assert "musicdecomp.models.musicslots" in code_closure(STEPS["eval_musicslots"].module)
    assert not any(m.startswith("musicdecomp.train") for m in code_closure(STEPS["features"].module))


# --- imports point one way: core -> data -> models -> metrics -> train -> eval -> pipeline/CLI ------------------

LAYERS = ["core", "data", "models", "metrics", "train", "eval", "pipeline"]
CORE = {"musicdecomp", "musicdecomp.errors", "musicdecomp.io", "musicdecomp.logs", "musicdecomp.slurm",
        "musicdecomp.config", "musicdecomp.sweep", "musicdecomp.device", "musicdecomp.compute"}


def layer(module: str) -> int:
    if module in CORE:
        return 0
    part = module.split(".")[1]
    return LAYERS.index(part) if part in LAYERS else LAYERS.index("pipeline")


def every_module() -> list[str]:
    pkg = REPO / "src/musicdecomp"
    return sorted("musicdecomp" + "".join(f".{p}" for p in f.relative_to(pkg).with_suffix("").parts)
                  .replace(".__init__", "") for f in pkg.rglob("*.py"))


def test_imports_point_one_way():
    wrong = [(m, i) for m in every_module() for i in package_imports(m) if layer(i) > layer(m)]
    assert not wrong, f"imports against the layers (module -> imported): {wrong}"


def test_the_import_graph_has_no_cycle():
    graph = {m: package_imports(m) - {m} for m in every_module()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in graph[m]:
            visit(n, path + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


@pytest.mark.parametrize("module, not_loaded", [
    ("musicdecomp.data.datasets", ("musicdecomp.train", "musicdecomp.eval", "musicdecomp.models",
                                   "musicdecomp.pipeline", "musicdecomp.sweep")),
    ("musicdecomp.models.musicslots", ("musicdecomp.train", "musicdecomp.eval", "musicdecomp.pipeline")),
])
def test_importing_a_low_layer_loads_nothing_above_it(module, not_loaded):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('musicdecomp')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not [m for m in eval(loaded) if m.startswith(not_loaded)], loaded
