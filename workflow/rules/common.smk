# Helpers shared by the rules: the parameter slices and code files each step depends on come from
# musicdecomp.pipeline, the same table dvc.yaml follows.
import json
import os
import re
import sys

from musicdecomp.config import step_config, to_json, validate
from musicdecomp.errors import UserError
from musicdecomp.pipeline import SPLITS, STEPS

try:
    validate(config)
except UserError as e:
    raise WorkflowError(f"params: {e}")

# The interpreter running Snakemake runs the steps too (the project's .venv).
PY = sys.executable
DATASETS = list(config["datasets"])


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),


def step_params(step, dataset=None, variant=None, seed=None):
    """The step's parameter slice as JSON: Snakemake's params rerun trigger sees exactly what the step uses."""
    return to_json(step_config(config, step, dataset, variant, seed))


def code(step):
    """The package files whose edits rerun the step (absolute, so --directory works)."""
    return [os.path.join(workflow.basedir, f) for f in STEPS[step].code_files()]


def dataset_outputs(dataset):
    return [f"results/data/{dataset}/{split}.pt" for split in SPLITS] + [f"results/data/{dataset}/summary.json"]


def data_targets():
    return [t for d in DATASETS for t in dataset_outputs(d) + [f"results/data/{d}/examples.png"]]


def all_targets():
    return (data_targets() + ["results/tables/table1_musicslots.md", "results/tables/table2_probes.md",
                             "results/stems/jsb/summary.json", "results/tables/codec.md"]
            + [f"results/codec/codes/{split}.pt" for split in SPLITS])
