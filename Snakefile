# musicdecomp workflow. Parameters: params.yaml (merge overrides with --configfile, e.g. config/tiny.yaml).
# Rules live in workflow/rules/; every rule calls one step of the musicdecomp package (python -m musicdecomp).
import os

from snakemake.utils import min_version

min_version("9.0")


# params.yaml beside this file, so that --directory (a separate work folder) still finds it
configfile: os.path.join(workflow.basedir, "params.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/musicslots.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/codec.smk"
include: "workflow/rules/composable.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# the data stages only: chords, rendered notes, JSB-single and JSB-multi with their figures (about 40 s on CPU)
rule data:
    input:
        data_targets(),
