# Data stages: JSB chorales -> chords -> rendered notes -> MusicSlots datasets (+ a figure per dataset).


rule fetch_jsb:
    input:
        code=code("fetch_jsb"),
    output:
        "results/data/jsb/jsb-chorales-quarter.json",
    params:
        cfg=step_params("fetch_jsb"),
    log:
        "logs/fetch_jsb.log",
    shell:
        "{PY} -m musicdecomp fetch-jsb --config {params.cfg:q} --out {output} --log {log}"


rule chords:
    input:
        json=rules.fetch_jsb.output[0],
        code=code("chords"),
    output:
        csv="results/data/jsb/chords.csv",
        summary="results/data/jsb/summary.json",
    params:
        cfg=step_params("chords"),
    log:
        "logs/chords.log",
    shell:
        "{PY} -m musicdecomp chords --config {params.cfg:q} --json {input.json}"
        " --out-csv {output.csv} --out-summary {output.summary} --log {log}"


rule render:
    input:
        chords=rules.chords.output.csv,
        code=code("render"),
    output:
        "results/data/notes/notes.pt",
    params:
        cfg=step_params("render"),
    threads: 4
    log:
        "logs/render.log",
    shell:
        "{PY} -m musicdecomp render --config {params.cfg:q} --chords {input.chords} --out {output}"
        " --workers {threads} --log {log}"


rule features:
    input:
        chords=rules.chords.output.csv,
        chords_summary=rules.chords.output.summary,
        notes=rules.render.output[0],
        code=code("features"),
    output:
        dataset_outputs("{dataset}"),
    params:
        cfg=lambda wc: step_params("features", wc.dataset),
        out_dir=lambda wc: f"results/data/{wc.dataset}",
    log:
        "logs/features/{dataset}.log",
    shell:
        "{PY} -m musicdecomp features --config {params.cfg:q} --dataset {wildcards.dataset}"
        " --chords {input.chords} --chords-summary {input.chords_summary} --notes {input.notes}"
        " --out-dir {params.out_dir} --log {log}"


rule figures:
    input:
        split="results/data/{dataset}/test.pt",
        code=code("figures"),
    output:
        "results/data/{dataset}/examples.png",
    params:
        cfg=lambda wc: step_params("figures", wc.dataset),
    log:
        "logs/figures/{dataset}.log",
    shell:
        "{PY} -m musicdecomp figures --config {params.cfg:q} --dataset {wildcards.dataset}"
        " --split {input.split} --out {output} --log {log}"


# Multi-stem audio (composable representations): the chorales' SATB voices rendered as drums/bass/piano stems.
rule fetch_jsb16:
    input:
        code=code("fetch_jsb16"),
    output:
        "results/data/jsb/Jsb16thSeparated.json",
    params:
        cfg=step_params("fetch_jsb16"),
    log:
        "logs/fetch_jsb16.log",
    shell:
        "{PY} -m musicdecomp fetch-jsb16 --config {params.cfg:q} --out {output} --log {log}"


rule stems:
    input:
        json=rules.fetch_jsb16.output[0],
        code=code("stems"),
    output:
        expand("results/stems/jsb/{split}.json", split=SPLITS),
        summary="results/stems/jsb/summary.json",
    params:
        cfg=step_params("stems"),
    threads: 4
    log:
        "logs/stems.log",
    shell:
        "{PY} -m musicdecomp stems --config {params.cfg:q} --json {input.json} --out-dir results/stems/jsb"
        " --workers {threads} --log {log}"
