# musicdecomp workflow. Parameters: params.yaml (merge overrides with --configfile, e.g. config/tiny.yaml).
# Rules live in workflow/rules/; every rule calls one step of the musicdecomp package (python -m musicdecomp).
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    default_target: True
    input:
        all_targets(),
