# Table 2's baselines (autoencoder / VAE with a latent probe, supervised CNN), their probes, and the tables.
from musicdecomp.sweep import BASELINE_PATTERN


wildcard_constraints:
    baseline=BASELINE_PATTERN,


rule train_baseline:
    input: **inputs("train_baseline")
    output: **outputs("train_baseline")
    params: **params("train_baseline")
    threads: 2
    resources:
        gpu=1,
    log: step_log("train_baseline")
    shell: command("train_baseline")


rule probe_baseline:
    input: **inputs("probe_baseline")
    output: **outputs("probe_baseline")
    params: **params("probe_baseline")
    resources:
        gpu=1,
    log: step_log("probe_baseline")
    shell: command("probe_baseline")


rule tables:
    input: **inputs("tables")
    output: **outputs("tables")
    params: **params("tables")
    log: step_log("tables")
    shell: command("tables")
