# MusicSlots: one training run per (dataset, variant, seed) of the sweep in params.yaml, its test-set
# evaluation and probe. Variants are named <mask>-t<stride>-imp_<true|false>-k<slots> (musicdecomp.sweep).
from musicdecomp.sweep import COMPOSABLE_VARIANT_PATTERN


wildcard_constraints:  # a MusicSlots variant (musicdecomp.sweep), or a composable-representations one
    variant=r"(softmax|sigmoid|none)-t\d+-imp_(true|false)-k\d+|" + COMPOSABLE_VARIANT_PATTERN,
    seed=r"\d+",


rule mlflow_init:
    input: **inputs("mlflow_init")
    output: **outputs("mlflow_init")
    params: **params("mlflow_init")
    log: step_log("mlflow_init")
    shell: command("mlflow_init")


rule train_musicslots:
    input: **inputs("train_musicslots")
    output: **outputs("train_musicslots")
    params: **params("train_musicslots")
    threads: 2
    resources:
        gpu=1,
    log: step_log("train_musicslots")
    shell: command("train_musicslots")


rule eval_musicslots:
    input: **inputs("eval_musicslots")
    output: **outputs("eval_musicslots")
    params: **params("eval_musicslots")
    log: step_log("eval_musicslots")
    shell: command("eval_musicslots")


rule probe_musicslots:
    input: **inputs("probe_musicslots")
    output: **outputs("probe_musicslots")
    params: **params("probe_musicslots")
    resources:
        gpu=1,
    log: step_log("probe_musicslots")
    shell: command("probe_musicslots")
