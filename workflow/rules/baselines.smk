# Baselines (autoencoder / VAE with a latent probe, supervised CNN), their probes, and the result tables.
BASELINE_DIR = baseline_dir("{dataset}", "{baseline}", "{seed}")


wildcard_constraints:
    baseline=BASELINE_PATTERN,


rule train_baseline:
    input:
        train="results/data/{dataset}/train.pt",
        valid="results/data/{dataset}/valid.pt",
        mlflow=mlflow_ready(),
        code=code("train_baseline"),
    output:
        best=f"{BASELINE_DIR}/best.pt",
        summary=f"{BASELINE_DIR}/train.json",
    params:
        cfg=lambda wc: step_params("train_baseline", wc.dataset, wc.baseline, int(wc.seed)),
        run_dir=BASELINE_DIR,
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/baselines/{dataset}/{baseline}/seed{seed}/train.log",
    shell:
        "{PY} -m musicdecomp train-baseline --config {params.cfg:q} --dataset {wildcards.dataset}"
        " --variant {wildcards.baseline} --seed {wildcards.seed} --data-dir results/data/{wildcards.dataset}"
        " --run-dir {params.run_dir} --threads {threads} {TRACKING} --log {log}"


rule probe_baseline:
    input:
        best=rules.train_baseline.output.best,
        summary=rules.train_baseline.output.summary,
        data=dataset_outputs("{dataset}"),
        code=code("probe"),
    output:
        f"{BASELINE_DIR}/probe.json",
    params:
        cfg=step_params("probe"),
        run_dir=BASELINE_DIR,
    resources:
        gpu=1,
    log:
        "logs/baselines/{dataset}/{baseline}/seed{seed}/probe.log",
    shell:
        "{PY} -m musicdecomp probe --config {params.cfg:q} --run-dir {params.run_dir}"
        " --data-dir results/data/{wildcards.dataset} --out {output} {TRACKING} --log {log}"


rule tables:
    input:
        evals=table_inputs(),
        code=code("tables"),
    output:
        "results/tables/table1_musicslots.csv",
        "results/tables/table1_musicslots.md",
        "results/tables/table1_musicslots.tex",
        "results/tables/table2_probes.csv",
        "results/tables/table2_probes.md",
        "results/tables/table2_probes.tex",
    params:
        cfg=step_params("tables"),
    log:
        "logs/tables.log",
    shell:
        "{PY} -m musicdecomp tables --config {params.cfg:q} --out-dir results/tables --log {log}"
