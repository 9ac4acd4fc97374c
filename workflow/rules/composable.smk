# Composable representations (Bindi & Esling, ISMIR 2024): one decomposition run per (subset, variant, seed) of
# params.yaml's composable section (the variants are composition operators and the supervised separator), its
# separation and reconstruction of the test chunks, the classic baselines on the same chunks, and the tables.


wildcard_constraints:
    subset="|".join(re.escape(s) for s in config["stems"]["subsets"]),
    pmask=r"\d+\.\d+",


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


# the recomposition prior over z (Tables 4-5): one per subset x p_mask x seed, its generations, the tables
rule train_prior:
    input: **inputs("train_prior")
    output: **outputs("train_prior")
    params: **params("train_prior")
    threads: 2
    resources:
        gpu=1,
    log: step_log("train_prior")
    shell: command("train_prior")


rule eval_generation:
    input: **inputs("eval_generation")
    output: **outputs("eval_generation")
    params: **params("eval_generation")
    threads: 2
    resources:
        gpu=1,
    log: step_log("eval_generation")
    shell: command("eval_generation")


rule generation_tables:
    input: **inputs("generation_tables")
    output: **outputs("generation_tables")
    params: **params("generation_tables")
    log: step_log("generation_tables")
    shell: command("generation_tables")

