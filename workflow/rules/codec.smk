# Codec latent space (composable representations): the codec (pretrained EnCodec weights, or the same
# architecture trained on the rendered stems: codec.source, auto by default), the codes of every split of the
# stems, and the codec reconstruction table on the test split. See docs/codec.md.
STEMS_DIR = "results/stems/jsb"


wildcard_constraints:
    split="|".join(SPLITS),


def codec_training_inputs():
    """A trained codec learns from the train and valid stems (and is an MLflow run); pretrained needs neither."""
    if json.loads(step_params("codec"))["source"] != "trained":
        return []
    return [f"{STEMS_DIR}/train.json", f"{STEMS_DIR}/valid.json"] + mlflow_ready()


rule codec:
    input:
        stems=codec_training_inputs(),
        code=code("codec"),
    output:
        model="results/codec/model.pt",
        summary="results/codec/codec.json",
    params:
        cfg=step_params("codec"),
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/codec/codec.log",
    shell:
        "{PY} -m musicdecomp codec --config {params.cfg:q} --stems-dir {STEMS_DIR} --out-dir results/codec"
        " {TRACKING} --log {log}"


rule cache_codes:
    input:
        codec=rules.codec.output.model,
        index=f"{STEMS_DIR}/{{split}}.json",
        code=code("cache_codes"),
    output:
        "results/codec/codes/{split}.pt",
    params:
        cfg=step_params("cache_codes"),
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/codec/codes_{split}.log",
    shell:
        "{PY} -m musicdecomp cache-codes --config {params.cfg:q} --codec {input.codec} --index {input.index}"
        " --out {output} --log {log}"


rule eval_codec:
    input:
        codec=rules.codec.output.model,
        codes="results/codec/codes/test.pt",
        index=f"{STEMS_DIR}/test.json",
        code=code("eval_codec"),
    output:
        json="results/codec/eval/test.json",
        table_csv="results/tables/codec.csv",
        table_md="results/tables/codec.md",
        figure="results/codec/eval/examples.png",
        audio=directory("results/codec/eval/audio"),
    params:
        cfg=step_params("eval_codec"),
    resources:
        gpu=1,
    log:
        "logs/codec/eval.log",
    shell:
        "{PY} -m musicdecomp eval-codec --config {params.cfg:q} --codec {input.codec} --codes {input.codes}"
        " --index {input.index} --out {output.json} --table-csv {output.table_csv} --table-md {output.table_md}"
        " --figure {output.figure} --audio-dir {output.audio} --log {log}"
