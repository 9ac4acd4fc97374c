# Composable representations (Bindi & Esling, ISMIR 2024): one decomposition run per (subset, variant, seed) of
# params.yaml's composable section (the variants are composition operators and the supervised separator), its
# separation and reconstruction of the test chunks, the classic baselines on the same chunks, and the tables.


wildcard_constraints:
    subset="|".join(re.escape(s) for s in config["stems"]["subsets"]),


rule train_composable:
    input: **inputs("train_composable")
    output: **outputs("train_composable")
    params: **params("train_composable")
    threads: 2
    resources:
        gpu=1,
    log: step_log("train_composable")
    shell: command("train_composable")


rule eval_composable:
    input: **inputs("eval_composable")
    output: **outputs("eval_composable")
    params: **params("eval_composable")
    threads: 2
    resources:
        gpu=1,
    log: step_log("eval_composable")
    shell: command("eval_composable")


rule eval_bss_baselines:
    input: **inputs("eval_bss_baselines")
    output: **outputs("eval_bss_baselines")
    params: **params("eval_bss_baselines")
    threads: 2
    log: step_log("eval_bss_baselines")
    shell: command("eval_bss_baselines")


rule composable_tables:
    input: **inputs("composable_tables")
    output: **outputs("composable_tables")
    params: **params("composable_tables")
    log: step_log("composable_tables")
    shell: command("composable_tables")
