# Codec latent space (composable representations): the codec (pretrained EnCodec weights, or the same
# architecture trained on the rendered stems: codec.source, auto by default), the codes of every split of the
# stems, and the codec reconstruction table on the test split. See docs/codec.md.


wildcard_constraints:
    split="|".join(SPLITS),


rule codec:
    input: **inputs("codec")
    output: **outputs("codec")
    params: **params("codec")
    threads: 2
    resources:
        gpu=1,
    log: step_log("codec")
    shell: command("codec")


rule cache_codes:
    input: **inputs("cache_codes")
    output: **outputs("cache_codes")
    params: **params("cache_codes")
    threads: 2
    resources:
        gpu=1,
    log: step_log("cache_codes")
    shell: command("cache_codes")


rule eval_codec:
    input: **inputs("eval_codec")
    output: **outputs("eval_codec")
    params: **params("eval_codec")
    resources:
        gpu=1,
    log: step_log("eval_codec")
    shell: command("eval_codec")
