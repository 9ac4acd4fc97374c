# Helpers shared by the rules. Every rule's inputs, outputs, log and command come from the step table
# (src/musicdecomp/pipeline.py), the table dvc.yaml is written from; the rules add what only Snakemake needs
# (threads, resources). A rule reruns when its parameter slice, an input or its step's code version changes.
import os
import re
import sys

from musicdecomp.config import to_json, validate
from musicdecomp.data import SPLITS
from musicdecomp.errors import UserError
from musicdecomp.pipeline import (experiment_input, plan_summary, planned_version, rule as table_rule,
                                  snakemake_shell, step_config)

try:
    validate(config)
except UserError as e:
    raise WorkflowError(f"params: {e}")

# Once, where the workflow is planned: what will not be trained here, and what it would cost.
if workflow.is_main_process and not workflow.remote_exec and (_plan := plan_summary(config)):
    print(_plan, file=sys.stderr)

# The interpreter running Snakemake runs the steps too (the project's .venv).
PY = sys.executable
DATASETS = list(config["datasets"])


def tracking_args():
    t = config["tracking"]
    return f"--tracking-uri {t['mlflow_uri']} --experiment {t['experiment']}" if t["mlflow_uri"] else ""


TRACKING = tracking_args()


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),


def step_params(step, dataset=None, variant=None, seed=None):
    """The step's parameter slice as JSON: Snakemake's params rerun trigger sees exactly what the step uses."""
    return to_json(step_config(config, step, dataset, variant, None if seed is None else int(seed)))


def inputs(name):
    """The rule's inputs from the step table (functions of the parameters evaluated here)."""
    _, r = table_rule(name)
    out = {k: v(config) if callable(v) else v for k, v in r.inputs.items()}
    if r.experiment:
        out["mlflow"] = experiment_input(config)
    return out


def outputs(name):
    _, r = table_rule(name)
    return {k: directory(v.rstrip("/")) if v.endswith("/") else v for k, v in r.outputs.items()}


def step_log(name):
    return table_rule(name)[1].log


def params(name):
    """``cfg``, the step's slice for the job's wildcards, and ``version``, its code version: a change in either
    reruns the job."""
    step, _ = table_rule(name)

    def cfg(wildcards):
        run = wildcards.get("variant") or wildcards.get("baseline") or wildcards.get("pmask")
        return step_params(step.name, wildcards.get("dataset") or wildcards.get("subset"), run, wildcards.get("seed"))

    def version(wildcards):  # the code version, and the job's decision when it is not to train here
        return planned_version(config, step.name, dict(wildcards))

    return {"cfg": cfg, "version": version}


def command(name):
    return snakemake_shell(name, TRACKING)


def dataset_outputs(dataset):
    return [f"results/data/{dataset}/{split}.pt" for split in SPLITS] + [f"results/data/{dataset}/summary.json"]


def data_targets():
    return [t for d in DATASETS for t in dataset_outputs(d) + [f"results/data/{d}/examples.png"]]


def all_targets():
    return (data_targets() + ["results/tables/table1_musicslots.md", "results/tables/table2_probes.md",
                             "results/stems/jsb/summary.json", "results/tables/codec.md",
                             "results/tables/composable_separation.md", "results/tables/composable_operators.md",
                             "results/tables/composable_generation.md", "results/tables/composable_diversity.md",
                             "results/report/index.html"]
            + [f"results/codec/codes/{split}.pt" for split in SPLITS])
