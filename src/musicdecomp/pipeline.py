"""The pipeline's step table: one description per step, behind Snakemake, DVC and the command line alike.

A ``Step`` says what the step computes with (its parameter slice, cut from params.yaml or resolved from it, and
checked when handed one from elsewhere), which code computes it (``module``, whose import closure is the step's
code) and its code ``version``. A step's ``Rule``s say where it reads and writes: each is one Snakemake rule
(``workflow/rules/*.smk`` take their inputs, outputs, log and command from here) and one or more DVC stages
(``dvc.yaml`` is written from this table by ``python -m musicdecomp write-dvc``; a test checks the committed file).

What reruns a step (both tools): a change in its parameter slice, in an input file, or in its code version.
The code version is bumped on purpose when what the step computes changes; ``workflow/code_versions.yaml``
records it with a fingerprint of the step's code (docstrings and comments left out), and a test fails when the
fingerprint changed and the version did not (``python -m musicdecomp code-versions`` says what to do).
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from musicdecomp import sweep
from musicdecomp.compute import PLANNED, SKIP, TRAIN, decide, minutes
from musicdecomp.config import _programs, get, validate
from musicdecomp.data import SPLITS
from musicdecomp.errors import UserError
from musicdecomp.models.encodec_weights import resolve_source

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]
CODE_VERSIONS = "workflow/code_versions.yaml"
CODE_VERSIONS_ENV = "MUSICDECOMP_CODE_VERSIONS"  # another lock file than the repository's (tests)

# run folders, with Snakemake's wildcards
MUSICSLOTS_RUN = "results/musicslots/{dataset}/{variant}/seed{seed}"
BASELINE_RUN = "results/baselines/{dataset}/{baseline}/seed{seed}"
EXPERIMENT = "results/mlflow/experiment.json"  # written by mlflow_init; a tracked training job needs it


@dataclass(frozen=True)
class Stage:
    """One DVC stage of a rule: ``foreach`` (an expression or a list) or ``matrix`` (name -> expression), and the
    DVC expression that stands for each of the rule's wildcards."""
    suffix: str = ""
    foreach: str | list | None = None
    matrix: dict[str, str] | None = None
    values: dict[str, str] = field(default_factory=dict)
    comment: str = ""


def matrix(suffix: str = "", comment: str = "", **axes: str) -> Stage:
    """A DVC matrix stage whose wildcards are its axes, each ``${item.<axis>}``."""
    return Stage(suffix, matrix=axes, values={a: f"${{item.{a}}}" for a in axes}, comment=comment)


@dataclass(frozen=True)
class Rule:
    """Where one rule of a step reads and writes.

    ``inputs``/``outputs``: name -> path, with ``{wildcard}``s; an output ending in '/' is a folder. An input may be
    a function of the parameters returning paths (Snakemake) when ``dvc_deps`` says what DVC depends on instead.
    ``args``: the command's arguments after ``--config``, with ``{input.x}``, ``{output.x}`` and ``{wildcard}``.
    ``tracked``: the command takes MLflow's options; ``experiment``: it needs the MLflow experiment first.
    ``workers``: arguments Snakemake adds (``{threads}``); DVC leaves the step its default."""
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, str]
    log: str
    args: str
    stages: tuple[Stage, ...] = (Stage(),)
    tracked: bool = False
    experiment: bool = False
    workers: str = ""
    dvc_deps: tuple[str, ...] | None = None
    dvc_outs: tuple[str, ...] | None = None
    dvc_uncached: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One step: its command (``python -m musicdecomp <name with dashes>``), code and parameter slice.

    ``params``: the params.yaml keys it depends on (``{dataset}`` filled per dataset), validated and tracked by DVC.
    A slice is these keys cut from params.yaml, unless ``resolve`` assembles it from (params, dataset, variant,
    seed); then ``fields`` (top-level keys) and ``sections`` ((path in the slice, the params.yaml key it holds); a
    path ending in '?' may be absent, not when its first part is present; '{kind}' is filled from the slice) and
    ``check`` describe its shape, which ``check_slice`` verifies in a slice handed to the step from elsewhere."""
    name: str
    module: str
    params: tuple[str, ...]
    rules: tuple[Rule, ...]
    per_dataset: bool = False
    uses_all_programs: bool = False  # the render step renders every program some dataset uses
    resolve: Callable | None = None
    per_run: bool = False
    fields: tuple[str, ...] = ()
    sections: tuple[tuple[str, str], ...] = ()
    check: Callable | None = None

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    def param_keys(self, params: dict, dataset: str | None = None) -> list[str]:
        keys = [k.format(dataset=dataset) for k in self.params]
        if self.uses_all_programs:
            keys += [f"datasets.{name}.programs" for name in params["datasets"]]
        return keys

    def dvc_param_keys(self, dataset: str | None = None) -> list[str]:
        """What DVC tracks for this step: the slice's keys, and all datasets where programs are pooled."""
        keys = [k.format(dataset=dataset) for k in self.params]
        return keys + (["datasets"] if self.uses_all_programs else [])


def codec_config(params: dict, *_run) -> dict:
    """The ``codec`` step's slice: the resolved source, and for a trained codec its whole run configuration."""
    codec = params["codec"]
    source = resolve_source(codec)
    cfg = {"source": source, "bandwidth": codec["bandwidth"]}
    if source == "pretrained":
        return {**cfg, "weights": codec["weights"], "url": codec["url"]}
    t = codec["trained"]
    return {**cfg, "trained": {"run_name": "codec/trained", "seed": t["seed"], "bandwidth": codec["bandwidth"],
                               "crop_seconds": t["crop_seconds"], "sample_rate": params["stems"]["sample_rate"],
                               "l1_weight": t["l1_weight"], "mel_weight": t["mel_weight"],
                               "commit_weight": t["commit_weight"], "train": t["train"]}}


def codec_training_inputs(params: dict) -> list[str]:
    """A trained codec learns from the train and valid stems (and is an MLflow run); pretrained needs neither."""
    if codec_config(params)["source"] != "trained":
        return []
    return ["results/stems/jsb/train.json", "results/stems/jsb/valid.json"] + experiment_input(params)


def experiment_input(params: dict) -> list[str]:
    return [EXPERIMENT] if params["tracking"]["mlflow_uri"] else []


def table_inputs(params: dict) -> list[str]:
    """Every evaluation and probe the tables are built from."""
    return ([f"{sweep.run_dir(d, v, s)}/test.json" for d, v, s in sweep.musicslots_runs(params)]
            + [f"{sweep.run_dir(d, v, s)}/probe.json" for d, v, s in sweep.probe_runs(params)]
            + [f"{sweep.baseline_dir(d, b, s)}/probe.json" for d, b, s in sweep.baseline_runs(params)])


DATASET = {"dataset": "${key}"}
DATASET_FILES = {**{s: f"results/data/{{dataset}}/{s}.pt" for s in SPLITS},
                 "summary": "results/data/{dataset}/summary.json"}
_GRID = {"dataset": "${musicslots.sweep.datasets}", "mask": "${musicslots.sweep.grid.mask}",
         "stride": "${musicslots.sweep.grid.time_stride}", "implicit": "${musicslots.sweep.grid.implicit}",
         "seed": "${musicslots.sweep.seeds}"}
_BASE = "${musicslots.model.mask}-t${musicslots.model.time_stride}-imp_${musicslots.model.implicit}"
MUSICSLOTS_STAGES = (  # the sweep of params.yaml as three matrices, the runs musicdecomp.sweep lists
    Stage("", matrix=_GRID, values={"dataset": "${item.dataset}", "seed": "${item.seed}",
                                    "variant": "${item.mask}-t${item.stride}-imp_${item.implicit}"
                                               "-k${musicslots.model.num_slots}"},
          comment="Table 1's grid: every mask x time stride x implicit differentiation, every seed"),
    Stage("slots", matrix={"dataset": "${musicslots.sweep.datasets}", "slots": "${musicslots.sweep.num_slots}",
                           "seed": "${musicslots.sweep.seeds}"},
          values={"dataset": "${item.dataset}", "seed": "${item.seed}", "variant": _BASE + "-k${item.slots}"},
          comment="the slot-count ablation of the base model"),
    Stage("single", matrix={"dataset": "${musicslots.sweep.single_instrument}", "seed": "${musicslots.sweep.seeds}"},
          values={"dataset": "${item.dataset}", "seed": "${item.seed}",
                  "variant": _BASE + "-k${musicslots.model.num_slots}"},
          comment="the base model on the single-instrument datasets"),
)
PROBE_STAGES = (
    matrix(dataset="${musicslots.sweep.datasets}", variant="${probe.musicslots_variants}",
           seed="${musicslots.sweep.seeds}"),
    matrix("single", dataset="${musicslots.sweep.single_instrument}", variant="${probe.musicslots_variants}",
           seed="${musicslots.sweep.seeds}"),
)
BASELINE_STAGES = (
    Stage("vae", matrix={"dataset": "${baselines.datasets}", "kld": "${baselines.vae.kld_weights}",
                         "seed": "${baselines.seeds}"},
          values={"dataset": "${item.dataset}", "baseline": "vae-kl${item.kld}", "seed": "${item.seed}"}),
    Stage("cnn", matrix={"dataset": "${baselines.datasets}", "seed": "${baselines.seeds}"},
          values={"dataset": "${item.dataset}", "baseline": "cnn", "seed": "${item.seed}"}),
)


def _probe_rule(name: str, run: str, stages: tuple[Stage, ...], logs: str) -> Rule:
    data = {f"data_{k}": v for k, v in DATASET_FILES.items()}
    return Rule(name, {"best": f"{run}/best.pt", "summary": f"{run}/train.json", **data},
                {"probe": f"{run}/probe.json"}, f"{logs}/probe.log",
                f"--run-dir {run} --data-dir results/data/{{dataset}} --out {{output.probe}}", stages, tracked=True)


def composable_baselines_config(params: dict, *_run) -> dict:
    """What the baseline separations depend on: the test chunks (count, seed, crop), the examples and the methods;
    not the models' sampling settings."""
    c = params["composable"]
    return {**{k: c["eval"][k] for k in ("max_chunks", "seed", "n_examples")}, **c["baselines"],
            "crop_frames": c["model"]["crop_frames"]}


def composable_table_inputs(params: dict) -> list[str]:
    return ([f"{sweep.composable_dir(s, v, seed)}/separation.json" for s, v, seed in sweep.composable_runs(params)]
            + [f"results/composable/{s}/baselines/separation.json" for s in params["composable"]["subsets"]])


COMPOSABLE_RUN = "results/composable/{subset}/{variant}/seed{seed}"
COMPOSABLE_LOGS = "logs/composable/{subset}/{variant}/seed{seed}"
COMPOSABLE_STAGES = (matrix(comment="every subset x variant (composition operators, the supervised separator) x seed",
                            subset="${composable.subsets}", variant="${composable.variants}",
                            seed="${composable.seeds}"),)
CODEC = "results/codec/model.pt"
PRIOR_RUN = "results/composable/{subset}/prior-p{pmask}/seed{seed}"
PRIOR_STAGES = (matrix(comment="a recomposition prior per subset x p_mask x seed", subset="${composable.subsets}",
                       pmask="${composable.prior.p_masks}", seed="${composable.seeds}"),)
PRIOR_DECOMPOSITION_DVC = "results/composable/${item.subset}/${composable.prior.decomposition}/seed${item.seed}/best.pt"


def prior_decomposition(params: dict) -> str:
    """The decomposition run a prior models (its subset and seed are the prior's wildcards)."""
    return f"results/composable/{{subset}}/{params['composable']['prior']['decomposition']}/seed{{seed}}/best.pt"


def generation_table_inputs(params: dict) -> list[str]:
    return [f"{sweep.prior_dir(*r)}/generation.json" for r in sweep.prior_runs(params)]


MS_LOGS = "logs/musicslots/{dataset}/{variant}/seed{seed}"
BASELINE_LOGS = "logs/baselines/{dataset}/{baseline}/seed{seed}"

STEPS: dict[str, Step] = {s.name: s for s in (
    Step("fetch_jsb", "musicdecomp.data.jsb", ("data.jsb.source",), (
        Rule("fetch_jsb", {}, {"json": "results/data/jsb/jsb-chorales-quarter.json"}, "logs/fetch_jsb.log",
             "--out {output.json}"),)),
    Step("chords", "musicdecomp.data.jsb", ("data.jsb.chords",), (
        Rule("chords", {"json": "results/data/jsb/jsb-chorales-quarter.json"},
             {"csv": "results/data/jsb/chords.csv", "summary": "results/data/jsb/summary.json"}, "logs/chords.log",
             "--json {input.json} --out-csv {output.csv} --out-summary {output.summary}"),)),
    Step("render", "musicdecomp.data.render", ("data.render",), (
        Rule("render", {"chords": "results/data/jsb/chords.csv"}, {"notes": "results/data/notes/notes.pt"},
             "logs/render.log", "--chords {input.chords} --out {output.notes}", workers="--workers {threads}"),),
         uses_all_programs=True),
    Step("features", "musicdecomp.data.datasets", ("data.mel", "datasets.{dataset}"), (
        Rule("features", {"chords": "results/data/jsb/chords.csv", "chords_summary": "results/data/jsb/summary.json",
                          "notes": "results/data/notes/notes.pt"}, DATASET_FILES, "logs/features/{dataset}.log",
             "--dataset {dataset} --chords {input.chords} --chords-summary {input.chords_summary} "
             "--notes {input.notes} --out-dir results/data/{dataset}",
             (Stage(foreach="${datasets}", values=DATASET),)),), per_dataset=True),
    Step("figures", "musicdecomp.data.figures", ("figures", "data.mel.mask_db"), (
        Rule("figures", {"split": "results/data/{dataset}/test.pt"}, {"png": "results/data/{dataset}/examples.png"},
             "logs/figures/{dataset}.log", "--dataset {dataset} --split {input.split} --out {output.png}",
             (Stage(foreach="${datasets}", values=DATASET),)),), per_dataset=True),
    Step("fetch_jsb16", "musicdecomp.data.stems", ("data.jsb16.source",), (
        Rule("fetch_jsb16", {}, {"json": "results/data/jsb/Jsb16thSeparated.json"}, "logs/fetch_jsb16.log",
             "--out {output.json}"),)),
    Step("stems", "musicdecomp.data.stems",
         ("stems", "data.render.soundfont", "data.render.reverb", "data.render.chorus"), (
        Rule("stems", {"json": "results/data/jsb/Jsb16thSeparated.json"},
             {**{s: f"results/stems/jsb/{s}.json" for s in SPLITS}, "summary": "results/stems/jsb/summary.json"},
             "logs/stems.log", "--json {input.json} --out-dir results/stems/jsb", workers="--workers {threads}",
             dvc_outs=("results/stems/jsb",)),)),
    # the codec (pretrained weights, or trained on the stems: codec.source), its codes per split, its table
    Step("codec", "musicdecomp.train.codec",
         ("codec.source", "codec.weights", "codec.url", "codec.bandwidth", "codec.trained", "stems.sample_rate"), (
        Rule("codec", {"stems": codec_training_inputs},
             {"model": "results/codec/model.pt", "summary": "results/codec/codec.json"}, "logs/codec/codec.log",
             "--stems-dir results/stems/jsb --out-dir results/codec", tracked=True,
             dvc_deps=("results/stems/jsb", EXPERIMENT)),),
         resolve=codec_config, fields=("source", "bandwidth"),
         sections=(("bandwidth", "codec.bandwidth"), ("weights?", "codec.weights"), ("url?", "codec.url"),
                   *((f"trained.{k}?", f"codec.trained.{k}") for k in (
                       "seed", "crop_seconds", "l1_weight", "mel_weight", "commit_weight", "train")),
                   ("trained.bandwidth?", "codec.bandwidth"), ("trained.sample_rate?", "stems.sample_rate"))),
    Step("cache_codes", "musicdecomp.models.codes", ("codec.encode_batch",), (
        Rule("cache_codes", {"codec": "results/codec/model.pt", "index": "results/stems/jsb/{split}.json"},
             {"codes": "results/codec/codes/{split}.pt"}, "logs/codec/codes_{split}.log",
             "--codec {input.codec} --index {input.index} --out {output.codes}",
             (Stage(foreach=list(SPLITS), values={"split": "${item}"}),),
             dvc_deps=("results/codec/model.pt", "results/stems/jsb")),)),
    Step("eval_codec", "musicdecomp.eval.codec", ("codec.eval",), (
        Rule("eval_codec", {"codec": "results/codec/model.pt", "codes": "results/codec/codes/test.pt",
                            "index": "results/stems/jsb/test.json"},
             {"json": "results/codec/eval/test.json", "table_csv": "results/tables/codec.csv",
              "table_md": "results/tables/codec.md", "figure": "results/codec/eval/examples.png",
              "audio": "results/codec/eval/audio/"}, "logs/codec/eval.log",
             "--codec {input.codec} --codes {input.codes} --index {input.index} --out {output.json} "
             "--table-csv {output.table_csv} --table-md {output.table_md} --figure {output.figure} "
             "--audio-dir {output.audio}",
             dvc_deps=("results/codec/model.pt", "results/codec/codes/test.pt", "results/stems/jsb")),)),
    Step("mlflow_init", "musicdecomp.train.tracking", ("tracking",), (
        Rule("mlflow_init", {}, {"json": EXPERIMENT}, "logs/mlflow_init.log",
             "--artifacts results/mlflow/artifacts --out {output.json}", tracked=True, dvc_uncached=(EXPERIMENT,)),)),
    # one MusicSlots run per (dataset, variant, seed)
    Step("train_musicslots", "musicdecomp.train.musicslots", ("musicslots.model", "musicslots.train"), (
        Rule("train_musicslots", {"train": "results/data/{dataset}/train.pt", "valid": "results/data/{dataset}/valid.pt"},
             {"best": f"{MUSICSLOTS_RUN}/best.pt", "summary": f"{MUSICSLOTS_RUN}/train.json"}, f"{MS_LOGS}/train.log",
             "--dataset {dataset} --variant {variant} --seed {seed} --data-dir results/data/{dataset} "
             f"--run-dir {MUSICSLOTS_RUN}", MUSICSLOTS_STAGES, tracked=True, experiment=True,
             workers="--threads {threads}"),),
         per_dataset=True, resolve=sweep.train_config, per_run=True, fields=("run_name", "dataset", "variant", "seed"),
         sections=(("model", "musicslots.model"), ("train", "musicslots.train"))),
    Step("eval_musicslots", "musicdecomp.eval.musicslots", ("musicslots.eval", "compute.reevaluate"), (
        Rule("eval_musicslots", {"best": f"{MUSICSLOTS_RUN}/best.pt", "summary": f"{MUSICSLOTS_RUN}/train.json",
                                 "test": "results/data/{dataset}/test.pt",
                                 "data_summary": "results/data/{dataset}/summary.json"},
             {"json": f"{MUSICSLOTS_RUN}/test.json", "figure": f"{MUSICSLOTS_RUN}/test_examples.png",
              "audio": f"{MUSICSLOTS_RUN}/test_audio/"}, f"{MS_LOGS}/eval.log",
             f"--run-dir {MUSICSLOTS_RUN} --data-dir results/data/{{dataset}} --out {{output.json}} "
             "--figure {output.figure} --audio-dir {output.audio}", MUSICSLOTS_STAGES, tracked=True),)),
    Step("train_baseline", "musicdecomp.train.baselines", ("baselines.vae", "baselines.cnn"), (
        Rule("train_baseline", {"train": "results/data/{dataset}/train.pt", "valid": "results/data/{dataset}/valid.pt"},
             {"best": f"{BASELINE_RUN}/best.pt", "summary": f"{BASELINE_RUN}/train.json"},
             f"{BASELINE_LOGS}/train.log",
             "--dataset {dataset} --variant {baseline} --seed {seed} --data-dir results/data/{dataset} "
             f"--run-dir {BASELINE_RUN}", BASELINE_STAGES, tracked=True, experiment=True,
             workers="--threads {threads}"),),
         per_dataset=True, resolve=sweep.baseline_config, per_run=True,
         fields=("run_name", "dataset", "baseline", "seed", "kind"),
         sections=(("model", "baselines.{kind}.model"), ("train", "baselines.{kind}.train")),
         check=sweep.check_baseline_slice),
    Step("probe", "musicdecomp.eval.probes", ("probe",), (
        _probe_rule("probe_musicslots", MUSICSLOTS_RUN, PROBE_STAGES, MS_LOGS),
        _probe_rule("probe_baseline", BASELINE_RUN, BASELINE_STAGES, BASELINE_LOGS)),
         per_dataset=True, resolve=sweep.probe_config, sections=(("train", "probe.train"),)),
    Step("tables", "musicdecomp.eval.tables",
         ("musicslots.model", "musicslots.sweep", "baselines", "probe.musicslots_variants"), (
        Rule("tables", {"evals": table_inputs},
             {f"{t}_{ext}": f"results/tables/{t}.{ext}" for t in ("table1_musicslots", "table2_probes")
              for ext in ("csv", "md", "tex")}, "logs/tables.log", "--out-dir results/tables",
             dvc_deps=("results/musicslots", "results/baselines")),),
         resolve=sweep.tables_config, fields=("runs", "probed", "baselines")),
    # composable representations: one run per (subset, variant, seed), its separation, the baselines, the tables
    Step("train_composable", "musicdecomp.train.composable", ("composable.model", "composable.train", "stems.subsets"), (
        Rule("train_composable", {"codec": CODEC, "train": "results/codec/codes/train.pt",
                                  "valid": "results/codec/codes/valid.pt"},
             {"best": f"{COMPOSABLE_RUN}/best.pt", "summary": f"{COMPOSABLE_RUN}/train.json"},
             f"{COMPOSABLE_LOGS}/train.log",
             "--subset {subset} --variant {variant} --seed {seed} --codec {input.codec} --codes-dir results/codec/codes "
             f"--run-dir {COMPOSABLE_RUN}", COMPOSABLE_STAGES, tracked=True, experiment=True,
             workers="--threads {threads}"),),
         resolve=sweep.composable_config, per_run=True, fields=("run_name", "subset", "variant", "seed", "classes"),
         sections=(("model", "composable.model"), ("train", "composable.train"))),
    Step("eval_composable", "musicdecomp.eval.separation", ("composable.eval",), (
        Rule("eval_composable", {"best": f"{COMPOSABLE_RUN}/best.pt", "summary": f"{COMPOSABLE_RUN}/train.json",
                                 "codec": CODEC, "codes": "results/codec/codes/test.pt",
                                 "index": "results/stems/jsb/test.json"},
             {"json": f"{COMPOSABLE_RUN}/separation.json", "figure": f"{COMPOSABLE_RUN}/separation.png",
              "examples": f"{COMPOSABLE_RUN}/examples/"}, f"{COMPOSABLE_LOGS}/eval.log",
             f"--run-dir {COMPOSABLE_RUN} --codec {{input.codec}} --codes {{input.codes}} --index {{input.index}} "
             "--out {output.json} --figure {output.figure} --examples-dir {output.examples}", COMPOSABLE_STAGES,
             tracked=True, dvc_deps=(f"{COMPOSABLE_RUN}/best.pt", f"{COMPOSABLE_RUN}/train.json", CODEC,
                                     "results/codec/codes/test.pt", "results/stems/jsb")),)),
    Step("eval_bss_baselines", "musicdecomp.eval.separation",
         ("composable.eval.max_chunks", "composable.eval.seed", "composable.eval.n_examples", "composable.baselines",
          "composable.model.crop_frames"), (
        Rule("eval_bss_baselines", {"codec": CODEC, "codes": "results/codec/codes/test.pt",
                                    "index": "results/stems/jsb/test.json"},
             {"json": "results/composable/{subset}/baselines/separation.json",
              "examples": "results/composable/{subset}/baselines/examples/"}, "logs/composable/{subset}/baselines.log",
             "--subset {subset} --codec {input.codec} --codes {input.codes} --index {input.index} --out {output.json} "
             "--examples-dir {output.examples}", (Stage(foreach="${composable.subsets}", values={"subset": "${item}"}),),
             workers="--workers {threads}", dvc_deps=(CODEC, "results/codec/codes/test.pt", "results/stems/jsb")),),
         resolve=composable_baselines_config,
         fields=("max_chunks", "seed", "n_examples", "methods", "nmf_components", "crop_frames"),
         sections=(("max_chunks", "composable.eval.max_chunks"), ("seed", "composable.eval.seed"),
                   ("n_examples", "composable.eval.n_examples"), ("methods", "composable.baselines.methods"),
                   ("nmf_components", "composable.baselines.nmf_components"),
                   ("crop_frames", "composable.model.crop_frames"))),
    Step("composable_tables", "musicdecomp.eval.composable_tables", ("composable.subsets", "composable.variants",
                                                                     "composable.seeds"), (
        Rule("composable_tables", {"evals": composable_table_inputs},
             {**{f"{t}_{ext}": f"results/tables/{t}.{ext}" for t in ("composable_separation", "composable_operators")
                 for ext in ("csv", "md", "tex")}, "figures": "results/figures/composable/"},
             "logs/composable_tables.log", "--out-dir results/tables --figures-dir {output.figures}",
             dvc_deps=("results/composable",)),),
         resolve=sweep.composable_tables_config, fields=("runs", "subsets", "variants")),
    # the recomposition prior over z: one per (subset, p_mask, seed), its generations, Tables 4-5
    Step("train_prior", "musicdecomp.train.prior",
         ("composable.prior.decomposition", "composable.prior.mask_scheme", "composable.prior.variant",
          "composable.prior.loss_on", "composable.prior.latent_norm", "composable.prior.unet",
          "composable.prior.train", "stems.subsets"), (
        Rule("train_prior", {"decomposition": prior_decomposition, "codec": CODEC,
                             "train": "results/codec/codes/train.pt", "valid": "results/codec/codes/valid.pt"},
             {"best": f"{PRIOR_RUN}/best.pt", "summary": f"{PRIOR_RUN}/train.json"},
             "logs/composable/{subset}/prior-p{pmask}/seed{seed}/train.log",
             "--subset {subset} --p-mask {pmask} --seed {seed} --codec {input.codec} --codes-dir results/codec/codes "
             f"--run-dir {PRIOR_RUN}", PRIOR_STAGES, tracked=True, experiment=True, workers="--threads {threads}",
             dvc_deps=(PRIOR_DECOMPOSITION_DVC, CODEC, "results/codec/codes/train.pt", "results/codec/codes/valid.pt",
                       EXPERIMENT)),),
         resolve=sweep.prior_config, per_run=True, fields=("run_name", "subset", "p_mask", "seed", "classes",
                                                           "decomposition"),
         sections=(("train", "composable.prior.train"), ("prior.unet", "composable.prior.unet"),
                   *((f"prior.{k}", f"composable.prior.{k}") for k in ("mask_scheme", "variant", "loss_on",
                                                                       "latent_norm")))),
    Step("eval_generation", "musicdecomp.eval.generation", ("composable.prior.eval",), (
        Rule("eval_generation", {"best": f"{PRIOR_RUN}/best.pt", "summary": f"{PRIOR_RUN}/train.json",
                                 "decomposition": prior_decomposition, "codec": CODEC,
                                 "codes": "results/codec/codes/test.pt", "index": "results/stems/jsb/test.json"},
             {"json": f"{PRIOR_RUN}/generation.json", "figure": f"{PRIOR_RUN}/generation.png",
              "examples": f"{PRIOR_RUN}/examples/"}, "logs/composable/{subset}/prior-p{pmask}/seed{seed}/eval.log",
             f"--run-dir {PRIOR_RUN} --codec {{input.codec}} --codes {{input.codes}} --index {{input.index}} "
             "--out {output.json} --figure {output.figure} --examples-dir {output.examples}", PRIOR_STAGES,
             tracked=True, dvc_deps=(f"{PRIOR_RUN}/best.pt", f"{PRIOR_RUN}/train.json", PRIOR_DECOMPOSITION_DVC, CODEC,
                                     "results/codec/codes/test.pt", "results/stems/jsb")),)),
    Step("generation_tables", "musicdecomp.eval.composable_tables",
         ("composable.subsets", "composable.seeds", "composable.prior.p_masks"), (
        Rule("generation_tables", {"evals": generation_table_inputs},
             {f"{t}_{ext}": f"results/tables/{t}.{ext}" for t in ("composable_generation", "composable_diversity")
              for ext in ("csv", "md", "tex")}, "logs/generation_tables.log", "--out-dir results/tables",
             dvc_deps=("results/composable",)),),
         resolve=sweep.generation_tables_config, fields=("priors",)),
)}

REPORT_TABLES = [f"results/tables/{t}.md" for t in (
    "table1_musicslots", "table2_probes", "codec", "composable_separation", "composable_operators",
    "composable_generation", "composable_diversity")]
STEPS["report"] = Step("report", "musicdecomp.eval.report", ("report",), (
    Rule("report", {"tables": REPORT_TABLES, "stems": "results/stems/jsb/summary.json"},
         {"html": "results/report/index.html"}, "logs/report.log", "--results results --out {output.html}",
         dvc_deps=(*REPORT_TABLES, "results/stems/jsb/summary.json")),))

RULES: dict[str, tuple[Step, Rule]] = {r.name: (s, r) for s in STEPS.values() for r in s.rules}


# --- parameter slices ----------------------------------------------------------------------------------------

def step_config(params: dict, step: str, dataset: str | None = None, variant: str | None = None,
                seed: int | None = None) -> dict:
    """The parameters ``step`` depends on, resolved from the full params (validated); a copy."""
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; known steps: {', '.join(STEPS)}")
    spec = STEPS[step]
    if spec.resolve is not None:  # a slice assembled from several sections (musicdecomp.sweep)
        for key in spec.params:
            validate(params, key)
        if spec.per_run and (dataset is None or variant is None or seed is None):
            raise UserError(f"{spec.command} needs --{'subset' if 'subset' in spec.fields else 'dataset'}, --variant "
                            f"and --seed")
        return copy.deepcopy(spec.resolve(params, dataset, variant, None if seed is None else int(seed)))
    if spec.per_dataset:
        if dataset is None:
            raise UserError(f"step {step} needs --dataset")
        datasets = get(params, "datasets")
        if dataset not in datasets:
            raise UserError(f"dataset {dataset!r} is not defined under datasets: in params.yaml "
                            f"(defined: {', '.join(datasets)})")
    out: dict[str, Any] = {}
    for key in spec.param_keys(params, dataset):
        validate(params, key)
        out[key] = get(params, key)
    if spec.uses_all_programs:
        # what rendering depends on is the union of the programs, not which dataset asked for which
        out = {k: v for k, v in out.items() if not k.startswith("datasets.")}
        out["programs"] = render_programs(params)
    return copy.deepcopy(out)  # the caller may change it; params stay as loaded


def render_programs(params: dict) -> list[int]:
    """Every GM program that some dataset uses: the render step renders each pitch on each of them."""
    programs: set[int] = set()
    for name, ds in get(params, "datasets").items():
        validate(params, f"datasets.{name}")
        programs.update(ds["programs"])
    return sorted(programs)


def _in_slice(cfg: dict, path: str) -> tuple[bool, Any]:
    """A slice's entry: a top-level key as it is ("data.mel"), else a path through nested mappings."""
    if path in cfg:
        return True, cfg[path]
    try:
        return True, get(cfg, path)
    except UserError:
        return False, None


def check_slice(cfg: dict, step: str, dataset: str | None = None, variant: str | None = None,
                seed: int | None = None) -> None:
    """Check a slice handed to ``step`` from outside (Snakemake's --config, or one printed earlier by
    ``python -m musicdecomp config``) as ``step_config`` checks params.yaml: every key there, known, in range,
    and naming the same dataset, variant and seed as the command line. A slice printed by another version
    of this package gets one line saying so, not a KeyError deep inside the step. Needs no YAML and no
    params.yaml (the GPU machine runs steps from slices alone)."""
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; known steps: {', '.join(STEPS)}")
    spec = STEPS[step]
    again = (f"print it again with `python -m musicdecomp config {spec.command}"
             + "".join(f" --{o} {v}" for o, v in (("dataset", dataset), ("variant", variant), ("seed", seed))
                       if v is not None) + "` (it may come from another version of musicdecomp)")

    def bad(problem: str):
        raise UserError(f"the --config of {spec.command}: {problem}; {again}")

    if spec.resolve is None:  # a slice cut from params.yaml: its keys are the step's own
        if spec.per_dataset and dataset is None:
            bad("the step needs --dataset too")
        fields = [k.format(dataset=dataset) for k in spec.params] + (["programs"] if spec.uses_all_programs else [])
        sections = [(k, k) for k in fields if k != "programs"]
        extra = sorted(set(cfg) - set(fields))
        other = [k for k in extra if k.startswith("datasets.") and k.count(".") == 1]
        if other and dataset is not None and f"datasets.{dataset}" not in cfg:
            bad(f"it is for dataset {other[0].split('.')[1]!r}, but the command line says --dataset {dataset}")
        if extra:
            bad(f"it holds {', '.join(extra)}, which this step does not take")
        if spec.uses_all_programs and "programs" in cfg and not _programs()[0](cfg["programs"]):
            bad(f"programs = {cfg['programs']!r} is out of range: expected {_programs()[1]}")
    else:
        fields, sections = list(spec.fields), list(spec.sections)
    lacking = [k for k in fields if k not in cfg]
    if lacking:
        bad(f"it lacks {', '.join(lacking)}")
    for option, value in (("dataset", dataset), ("variant", variant), ("seed", seed)):
        key = {"variant": "baseline" if "baseline" in fields else "p_mask" if "p_mask" in fields else "variant",
               "dataset": "subset" if "subset" in fields else "dataset"}.get(option, option)
        if key == "p_mask" and value is not None:
            value = float(str(value).removeprefix("p"))
        if value is not None and key in fields and str(cfg[key]) != str(value):
            bad(f"it is for {key} {cfg[key]!r}, but the command line says --{option} {value}")
    if spec.check is not None and (problem := spec.check(cfg)):
        bad(problem)
    for path, key in sections:
        optional, path = path.endswith("?"), path.rstrip("?")
        found, value = _in_slice(cfg, path)
        if not found:
            if optional and path.split(".")[0] not in cfg:
                continue
            bad(f"it lacks {path}")
        key = key.format(**{k: v for k, v in cfg.items() if isinstance(v, str)})
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        try:
            validate(nested, key, fix=again)
        except UserError as e:
            raise UserError(f"the --config of {spec.command}: {e}") from None


# --- code versions -------------------------------------------------------------------------------------------

def module_file(module: str) -> Path:
    """The source file of a package module (``musicdecomp.data.mel`` -> .../data/mel.py)."""
    parts = module.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@functools.cache
def package_imports(module: str) -> frozenset[str]:
    """The package modules ``module`` imports, at its top or inside functions (read from its source)."""
    tree = ast.parse(module_file(module).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("musicdecomp"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("musicdecomp"):
            found.add(node.module)
            for a in node.names:  # ``from musicdecomp import sweep`` imports a module
                if module_file(f"{node.module}.{a.name}").exists():
                    found.add(f"{node.module}.{a.name}")
    return frozenset(m for m in found if module_file(m).exists())


def code_closure(module: str) -> list[str]:
    """``module`` and every package module it imports, directly or not: the code a step runs."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(package_imports(m) - seen)
    return sorted(seen)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_hash(source: str) -> str:
    """A short hash of what Python source computes: its syntax tree without docstrings (comments are not in it)."""
    return hashlib.sha256(ast.dump(_without_docstrings(ast.parse(source))).encode()).hexdigest()[:16]


# data files a module reads, part of its code: editing them is a code change of every step that runs the module
MODULE_DATA = {"musicdecomp.eval.tables": ("eval/paper_numbers.yaml",)}


@functools.cache
def module_hash(module: str) -> str:
    h = source_hash(module_file(module).read_text())
    for name in MODULE_DATA.get(module, ()):
        h = hashlib.sha256((h + (PACKAGE_DIR / name).read_text()).encode()).hexdigest()[:16]
    return h


def code_hashes(step: str) -> dict[str, str]:
    """Module file (relative to the package) -> hash, for every module of the step's code."""
    return {str(module_file(m).relative_to(PACKAGE_DIR)): module_hash(m) for m in code_closure(STEPS[step].module)}


def fingerprint(hashes: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(hashes.items())).encode()).hexdigest()[:16]


def read_code_versions(path: str | Path | None = None) -> dict:
    """``workflow/code_versions.yaml``: {steps: {step: {version, code}}, modules: {file: hash}}."""
    import yaml

    path = Path(path or os.environ.get(CODE_VERSIONS_ENV) or REPO_ROOT / CODE_VERSIONS)
    if not path.is_file():
        raise UserError(f"{path} is missing; write it with `python -m musicdecomp code-versions --update`")
    return yaml.safe_load(path.read_text())


def code_version(step: str, path: str | Path | None = None) -> int:
    """The step's code version as recorded in ``workflow/code_versions.yaml``."""
    versions = read_code_versions(path)["steps"]
    if step not in versions:
        raise UserError(f"{CODE_VERSIONS} has no version for step {step}; add it with "
                        f"`python -m musicdecomp code-versions --update`")
    return int(versions[step]["version"])


def code_id(step: str) -> dict[str, str]:
    """What a training run records as the code that trained it: the step's code version and its modules' hashes
    (a run resumed with other code says which modules changed)."""
    try:
        version = str(code_version(step))
    except UserError:  # e.g. an installed package without the repository's workflow/
        version = "unknown"
    return {"version": version, **code_hashes(step)}


def stale_code(recorded: dict) -> dict[str, list[str]]:
    """Steps whose code differs from the fingerprint recorded at their version: step -> the modules that
    changed (empty list: the set of modules changed)."""
    out = {}
    for name in STEPS:
        entry = recorded["steps"].get(name)
        hashes = code_hashes(name)
        if entry is None or entry["code"] != fingerprint(hashes):
            old = recorded.get("modules", {})
            out[name] = sorted(f for f, h in hashes.items() if old.get(f) != h)
    return out


def update_code_versions(recorded: dict, same_results: list[str] | None, bump: list[str]) -> tuple[dict, list[str]]:
    """The lock with ``bump``ed steps at version + 1, and the fingerprints of changed steps recorded where the
    version was bumped or the change is declared not to change results (``same_results``; ``["all"]``: every
    changed step). Returns (new lock, the steps still refused)."""
    stale = stale_code(recorded)
    steps = {k: dict(v) for k, v in recorded["steps"].items() if k in STEPS}
    refused = []
    for name in STEPS:
        hashes = code_hashes(name)
        entry = steps.get(name)
        if entry is None:
            steps[name] = {"version": 1, "code": fingerprint(hashes)}
        elif name in bump:
            steps[name] = {"version": int(entry["version"]) + 1, "code": fingerprint(hashes)}
        elif name in stale:
            if same_results is not None and ("all" in same_results or name in same_results):
                steps[name] = {"version": int(entry["version"]), "code": fingerprint(hashes)}
            else:
                refused.append(name)
    modules = dict(recorded.get("modules", {}))
    for name in STEPS:
        if name not in refused:
            modules.update(code_hashes(name))
    return {"steps": dict(sorted(steps.items())), "modules": dict(sorted(modules.items()))}, refused


def write_code_versions(lock: dict, path: str | Path | None = None) -> None:
    import yaml

    from musicdecomp.io import write_text

    head = ("# Code versions of the pipeline's steps, written by `python -m musicdecomp code-versions --update`.\n"
            "# A step reruns (Snakemake and DVC) when its version changes; bump it when what the step computes\n"
            "# changes. `code` is the fingerprint of the step's code at that version (musicdecomp.pipeline).\n")
    write_text(path or REPO_ROOT / CODE_VERSIONS, head + yaml.safe_dump(lock, sort_keys=False))


# --- where GPU-scale work runs (musicdecomp.compute) -----------------------------------------------------------

def _job(step: str, params: dict, wildcards: dict) -> tuple[dict, str]:
    """A planned job's slice and the file that says whether it already ran here."""
    if step == "cache_codes":
        return {"split": wildcards["split"]}, f"results/codec/codes/{wildcards['split']}.pt"
    if step == "codec":
        return step_config(params, "codec"), "results/codec/trained/train.json"
    run = (wildcards.get("dataset") or wildcards.get("subset"),
           wildcards.get("variant") or wildcards.get("baseline") or wildcards.get("pmask"), wildcards.get("seed"))
    cfg = step_config(params, step, *run)
    run_dir = {"train_musicslots": sweep.run_dir, "train_baseline": sweep.baseline_dir,
               "train_composable": sweep.composable_dir, "train_prior": sweep.prior_dir}[step](
        cfg.get("dataset") or cfg["subset"], cfg.get("variant") or cfg.get("baseline") or cfg["p_mask"], cfg["seed"])
    return cfg, f"{run_dir}/train.json"


def planned_version(params: dict, step: str, wildcards: dict) -> int | str:
    """What Snakemake records as a job's version: its code version, followed by the action when the job is not to
    train here (``release``, ``skip``). A job that trains keeps the plain version, so a decision that changes
    reruns exactly the jobs it concerns, and a run trained here is never planned away."""
    version = code_version(step)
    if step not in PLANNED:
        return version
    cfg, summary = _job(step, params, wildcards)
    d = decide(step, cfg, params, summary, version)
    if d["action"] == TRAIN:
        return version
    c = d["cost"]  # what the skipped job's record says (a new estimate rewrites the record, nothing else)
    return f"{version} {d['action']}" + ("" if d["action"] != SKIP else
                                         f" gpu_minutes={c['gpu_minutes']:.1f} cpu_minutes={c['cpu_minutes']:.1f} "
                                         f"gpu_measured={str(c['gpu_measured']).lower()} gpu={str(params['compute']['gpu']).lower()}")


def planned_jobs(params: dict) -> list[tuple[str, dict]]:
    """Every planned job `all` asks for: (step, wildcards)."""
    jobs: list[tuple[str, dict]] = [("codec", {})] + [("cache_codes", {"split": s}) for s in SPLITS]
    jobs += [("train_musicslots", {"dataset": d, "variant": v, "seed": str(s)}) for d, v, s in sweep.musicslots_runs(params)]
    jobs += [("train_baseline", {"dataset": d, "baseline": b, "seed": str(s)}) for d, b, s in sweep.baseline_runs(params)]
    jobs += [("train_composable", {"subset": a, "variant": v, "seed": str(s)}) for a, v, s in sweep.composable_runs(params)]
    jobs += [("train_prior", {"subset": a, "pmask": str(p), "seed": str(s)}) for a, p, s in sweep.prior_runs(params)]
    return jobs


def plan_summary(params: dict) -> str | None:
    """One paragraph on what `all` will not train here and what it would cost; None when everything trains."""
    counts = {"release": 0, "skip": 0}
    gpu = 0.0
    for step, wc in planned_jobs(params):
        cfg, summary = _job(step, params, wc)
        d = decide(step, cfg, params, summary, code_version(step))
        if d["action"] in counts:
            counts[d["action"]] += 1
        if d["action"] == "skip":
            gpu += d["cost"]["gpu_minutes"]
    if not counts["skip"] and not counts["release"]:
        return None
    text = []
    if counts["release"]:
        text.append(f"{counts['release']} job(s) use runs the project releases (releases/) instead of training")
    if counts["skip"]:
        text.append(f"{counts['skip']} GPU-scale job(s) will not run here (no GPU; compute.gpu: "
                    f"{str(params['compute']['gpu']).lower()}): {minutes(gpu)} in all. Their table rows say "
                    f"'not trained here'; run on a GPU machine or through the SLURM profile to train them")
    return "musicdecomp: " + ". ".join(text) + "."


# --- the two workflow tools ----------------------------------------------------------------------------------

WILDCARD = re.compile(r"\{(\w+)\}")


def rule(name: str) -> tuple[Step, Rule]:
    if name not in RULES:
        raise UserError(f"no rule {name!r} in the step table (musicdecomp.pipeline); known: {', '.join(RULES)}")
    return RULES[name]


def snakemake_shell(name: str, tracking: str) -> str:
    """The rule's shell command: the step's entry point with its slice (``params.cfg``) and arguments."""
    step, r = rule(name)
    # {input.x} and {output.x} stay as they are (WILDCARD matches no name with a dot)
    args = WILDCARD.sub(lambda m: "{wildcards." + m.group(1) + "}" if m.group(1) != "threads" else "{threads}", r.args)
    parts = ["{PY} -m musicdecomp", step.command, "--config {params.cfg:q}", args,
             "--plan {params.version:q}" if step.name in PLANNED else "", tracking if r.tracked else "", r.workers,
             "--log {log}"]
    return " ".join(p for p in parts if p)


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages, in the order of the table."""
    out = {}
    for step in STEPS.values():
        for r in step.rules:
            for stage in r.stages:
                out[r.name + (f"_{stage.suffix}" if stage.suffix else "")] = _dvc_stage(step, r, stage)
    return out


def _dvc_stage(step: Step, r: Rule, stage: Stage) -> dict:
    def fill(text: str) -> str:
        return WILDCARD.sub(lambda m: stage.values[m.group(1)], text)

    files = {**{f"input.{k}": v for k, v in r.inputs.items() if isinstance(v, str)},
             **{f"output.{k}": v.rstrip("/") for k, v in r.outputs.items()}}
    args = re.sub(r"\{((?:input|output)\.\w+)\}", lambda m: files[m.group(1)], r.args)
    tracking = "--tracking-uri ${tracking.mlflow_uri} --experiment ${tracking.experiment}" if r.tracked else ""
    cmd = " ".join(p for p in ("python -m musicdecomp", step.command, fill(args), tracking,
                               f"--log {fill(r.log)}") if p)
    deps = list(r.dvc_deps) if r.dvc_deps is not None else (
        [v for v in r.inputs.values() if isinstance(v, str)] + ([EXPERIMENT] if r.experiment else []))
    dataset = "${key}" if stage.foreach == "${datasets}" else None
    params: list = step.dvc_param_keys(dataset)
    params.append({CODE_VERSIONS: [f"steps.{step.name}.version"]})
    outs = list(r.dvc_outs) if r.dvc_outs is not None else [v.rstrip("/") for v in r.outputs.values()]
    body = {"cmd": cmd, **({"deps": [fill(d) for d in deps]} if deps else {}), "params": params,
            "outs": [{fill(o): {"cache": False}} if o in r.dvc_uncached else fill(o) for o in outs]}
    if stage.matrix is not None:
        return {"matrix": dict(stage.matrix), **body}
    if stage.foreach is not None:
        return {"foreach": stage.foreach, "do": body}
    return body


def dvc_yaml() -> str:
    """The text of dvc.yaml."""
    import yaml

    head = ("# Written by `python -m musicdecomp write-dvc` from the step table (src/musicdecomp/pipeline.py), the same\n"
            "# table the Snakemake rules follow: do not edit by hand (tests/test_pipeline_table.py checks it).\n"
            "# Run inside the project's environment: source .venv/bin/activate && dvc repro\n")
    class Dumper(yaml.SafeDumper):  # lists indented under their key, as people write dvc.yaml
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    text = yaml.dump({"stages": dvc_stages()}, Dumper=Dumper, sort_keys=False, width=116, default_flow_style=False)
    text = re.sub(r"\n(  \S)", r"\n\n\1", text).replace("stages:\n\n", "stages:\n")
    for step in STEPS.values():  # what a stage is, where the table says
        for r in step.rules:
            for stage in r.stages:
                if stage.comment:
                    name = r.name + (f"_{stage.suffix}" if stage.suffix else "")
                    text = text.replace(f"\n  {name}:\n", f"\n  # {stage.comment}\n  {name}:\n", 1)
    return head + text
