# MusicSlots: one training run per (dataset, variant, seed) of the sweep in params.yaml, its test-set
# evaluation, and Table 1 built from the evaluations. Variants are named <mask>-t<stride>-<imp|noimp>-k<slots>.
from musicdecomp.sweep import BASELINE_PATTERN, baseline_dir, baseline_runs, musicslots_runs, probe_runs, run_dir

RUN_DIR = run_dir("{dataset}", "{variant}", "{seed}")


wildcard_constraints:
    variant=r"(softmax|sigmoid|none)-t\d+-imp_(true|false)-k\d+",
    seed=r"\d+",


def tracking_args():
    t = config["tracking"]
    return f"--tracking-uri {t['mlflow_uri']} --experiment {t['experiment']}" if t["mlflow_uri"] else ""


def mlflow_ready():
    return ["results/mlflow/experiment.json"] if config["tracking"]["mlflow_uri"] else []


def table_inputs():
    return ([f"{run_dir(d, v, s)}/test.json" for d, v, s in musicslots_runs(config)]
            + [f"{run_dir(d, v, s)}/probe.json" for d, v, s in probe_runs(config)]
            + [f"{baseline_dir(d, b, s)}/probe.json" for d, b, s in baseline_runs(config)])


TRACKING = tracking_args()


rule mlflow_init:
    output:
        "results/mlflow/experiment.json",
    log:
        "logs/mlflow_init.log",
    shell:
        "{PY} -m musicdecomp mlflow-init {TRACKING} --artifacts results/mlflow/artifacts --out {output} --log {log}"


rule train_musicslots:
    input:
        train="results/data/{dataset}/train.pt",
        valid="results/data/{dataset}/valid.pt",
        mlflow=mlflow_ready(),
        code=code("train_musicslots"),
    output:
        best=f"{RUN_DIR}/best.pt",
        summary=f"{RUN_DIR}/train.json",
    params:
        cfg=lambda wc: step_params("train_musicslots", wc.dataset, wc.variant, int(wc.seed)),
        run_dir=RUN_DIR,
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/musicslots/{dataset}/{variant}/seed{seed}/train.log",
    shell:
        "{PY} -m musicdecomp train-musicslots --config {params.cfg:q} --dataset {wildcards.dataset}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --data-dir results/data/{wildcards.dataset}"
        " --run-dir {params.run_dir} --threads {threads} {TRACKING} --log {log}"


rule eval_musicslots:
    input:
        best=rules.train_musicslots.output.best,
        summary=rules.train_musicslots.output.summary,
        test="results/data/{dataset}/test.pt",
        data_summary="results/data/{dataset}/summary.json",
        code=code("eval_musicslots"),
    output:
        json=f"{RUN_DIR}/test.json",
        figure=f"{RUN_DIR}/test_examples.png",
        audio=directory(f"{RUN_DIR}/test_audio"),
    params:
        cfg=step_params("eval_musicslots"),
        run_dir=RUN_DIR,
    log:
        "logs/musicslots/{dataset}/{variant}/seed{seed}/eval.log",
    shell:
        "{PY} -m musicdecomp eval-musicslots --config {params.cfg:q} --run-dir {params.run_dir}"
        " --data-dir results/data/{wildcards.dataset}"
        " --out {output.json} --figure {output.figure} --audio-dir {output.audio} {TRACKING} --log {log}"


rule probe_musicslots:
    input:
        best=rules.train_musicslots.output.best,
        summary=rules.train_musicslots.output.summary,
        data=dataset_outputs("{dataset}"),
        code=code("probe"),
    output:
        f"{RUN_DIR}/probe.json",
    params:
        cfg=step_params("probe"),
        run_dir=RUN_DIR,
    resources:
        gpu=1,
    log:
        "logs/musicslots/{dataset}/{variant}/seed{seed}/probe.log",
    shell:
        "{PY} -m musicdecomp probe --config {params.cfg:q} --run-dir {params.run_dir}"
        " --data-dir results/data/{wildcards.dataset} --out {output} {TRACKING} --log {log}"
