"""The MusicSlots sweep: which (dataset, variant, seed) runs `all` trains, and each run's resolved config.

A variant is named after the model settings it changes, ``<mask>-t<time_stride>-imp_<true|false>-k<num_slots>``
(e.g. ``none-t1-imp_true-k7``: no mask, time stride 1, implicit differentiation, 7 slots); everything else
comes from ``musicslots.model``. The name is spelled so that dvc.yaml can build it from the parameter values.
Any such name can be built on request
(``snakemake results/musicslots/jsb_multi/none-t2-imp_false-k5/seed3/test.json``), not only the swept ones.
"""

from __future__ import annotations

import itertools
import re

from musicdecomp.errors import UserError

# the model fields a variant name fixes (variant_name, variant_model); the rest of the model config is not in it
VARIANT_FIELDS = ("mask", "time_stride", "implicit", "num_slots")
VARIANT_RE = re.compile(r"^(softmax|sigmoid|none)-t(\d+)-imp_(true|false)-k(\d+)$")
BASELINE_PATTERN = r"cnn|vae-kl(\d+(?:\.\d+)?)"  # Table 2's baselines: cnn, vae-kl<KL weight> (0.0: autoencoder)
BASELINE_RE = re.compile(f"^(?:{BASELINE_PATTERN})$")


def is_baseline(name: str) -> bool:
    """Whether ``name`` names a baseline run (``cnn``, ``vae-kl<weight>``) rather than a MusicSlots variant."""
    return BASELINE_RE.match(name) is not None


def variant_name(model: dict) -> str:
    return f"{model['mask']}-t{model['time_stride']}-imp_{str(model['implicit']).lower()}-k{model['num_slots']}"


def variant_model(base: dict, variant: str) -> dict:
    m = VARIANT_RE.match(variant)
    if not m:
        raise UserError(f"variant {variant!r} is not <softmax|sigmoid|none>-t<stride>-imp_<true|false>-k<slots>, "
                        f"e.g. none-t1-imp_true-k7")
    return {**base, "mask": m.group(1), "time_stride": int(m.group(2)), "implicit": m.group(3) == "true",
            "num_slots": int(m.group(4))}


def musicslots_runs(params: dict) -> list[tuple[str, str, int]]:
    """(dataset, variant, seed) for every run of the sweep, without duplicates, in a stable order."""
    ms = params["musicslots"]
    base, sweep = ms["model"], ms["sweep"]
    variants = []
    keys = list(sweep["grid"])
    for values in itertools.product(*(sweep["grid"][k] for k in keys)):
        variants.append(variant_name({**base, **dict(zip(keys, values))}))
    runs = []
    for ds in sweep["datasets"]:
        for v in variants + [variant_name({**base, "num_slots": k}) for k in sweep["num_slots"]]:
            runs += [(ds, v, s) for s in sweep["seeds"]]
    for ds in sweep["single_instrument"]:
        runs += [(ds, variant_name(base), s) for s in sweep["seeds"]]
    seen, out = set(), []
    for r in runs:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def run_name(dataset: str, variant: str, seed: int) -> str:
    return f"{dataset}/{variant}/seed{seed}"


def run_dir(dataset: str, variant: str, seed: int) -> str:
    return f"results/musicslots/{run_name(dataset, variant, seed)}"


def baseline_names(params: dict) -> list[str]:
    """``vae-kl<weight>`` for each KL weight (0.0: the deterministic autoencoder), and ``cnn``."""
    return [f"vae-kl{float(w)}" for w in params["baselines"]["vae"]["kld_weights"]] + ["cnn"]


def baseline_runs(params: dict) -> list[tuple[str, str, int]]:
    b = params["baselines"]
    return [(d, n, s) for d in b["datasets"] for n in baseline_names(params) for s in b["seeds"]]


def baseline_dir(dataset: str, name: str, seed: int) -> str:
    return f"results/baselines/{dataset}/{name}/seed{seed}"


def baseline_config(params: dict, dataset: str, name: str, seed: int) -> dict:
    """Everything a baseline run depends on."""
    if dataset not in params["datasets"]:
        raise UserError(f"dataset {dataset!r} is not defined under datasets: in params.yaml")
    cfg = {"run_name": f"{dataset}/{name}/seed{seed}", "dataset": dataset, "baseline": name, "seed": int(seed)}
    m = BASELINE_RE.match(name)
    if not m:
        raise UserError(f"baseline {name!r} is not cnn or vae-kl<weight> (e.g. vae-kl0.0, vae-kl0.03125)")
    if name == "cnn":
        return {**cfg, "kind": "cnn", "model": params["baselines"]["cnn"]["model"],
                "train": params["baselines"]["cnn"]["train"]}
    vae = params["baselines"]["vae"]
    return {**cfg, "kind": "vae", "kld_weight": float(m.group(1)), "model": vae["model"], "train": vae["train"]}


def check_baseline_slice(cfg: dict) -> str | None:
    """What a baseline slice needs beyond its common fields (see config.check_slice); the problem, or None."""
    if cfg["kind"] not in ("vae", "cnn"):
        return f"kind = {cfg['kind']!r} is neither vae nor cnn"
    if cfg["kind"] == "vae" and not (isinstance(cfg.get("kld_weight"), (int, float)) and cfg["kld_weight"] >= 0):
        return "a vae slice needs kld_weight, a number >= 0"
    return None


def probe_config(params: dict, *_run) -> dict:
    """What a probe depends on: the probe's training settings (the probed run brings its own config)."""
    return {"train": params["probe"]["train"]}


def probe_train_config(run_cfg: dict, probe_cfg: dict) -> dict:
    """The configuration of the probe trained on the run ``run_cfg`` with the probe step's slice ``probe_cfg``."""
    return {"run_name": f"{run_cfg['run_name']}/probe", "seed": run_cfg["seed"], "train": probe_cfg["train"]}


def probe_runs(params: dict) -> list[tuple[str, str, int]]:
    """The MusicSlots runs whose slots are probed."""
    wanted = set(params["probe"]["musicslots_variants"])
    return [r for r in musicslots_runs(params) if r[1] in wanted]


def tables_config(params: dict, *_run) -> dict:
    """What the tables depend on: the lists of runs (their evaluations are the inputs)."""
    return {"runs": [list(r) for r in musicslots_runs(params)],
            "probed": [list(r) for r in probe_runs(params)],
            "baselines": [list(r) for r in baseline_runs(params)]}


def train_config(params: dict, dataset: str, variant: str, seed: int) -> dict:
    """Everything a MusicSlots training run depends on (tracking settings excluded: they do not change it)."""
    if dataset not in params["datasets"]:
        raise UserError(f"dataset {dataset!r} is not defined under datasets: in params.yaml")
    return {"run_name": run_name(dataset, variant, seed), "dataset": dataset, "variant": variant, "seed": int(seed),
            "model": variant_model(params["musicslots"]["model"], variant), "train": params["musicslots"]["train"]}


# --- composable representations ------------------------------------------------------------------------------

COMPOSABLE_VARIANTS = ("mean", "sum", "min", "max", "supervised")  # the operators, and the supervised separator
COMPOSABLE_VARIANT_PATTERN = "|".join(COMPOSABLE_VARIANTS)


def composable_runs(params: dict) -> list[tuple[str, str, int]]:
    """(subset, variant, seed) for every composable-representations run `all` trains."""
    c = params["composable"]
    return [(s, v, seed) for s in c["subsets"] for v in c["variants"] for seed in c["seeds"]]


def composable_dir(subset: str, variant: str, seed: int) -> str:
    return f"results/composable/{subset}/{variant}/seed{seed}"


def composable_config(params: dict, subset: str, variant: str, seed: int) -> dict:
    """Everything a composable-representations run depends on: its subset's classes (N), the model and training
    settings."""
    subsets = params["stems"]["subsets"]
    if subset not in subsets:
        raise UserError(f"subset {subset!r} is not defined under stems.subsets (defined: {', '.join(subsets)})")
    if variant not in COMPOSABLE_VARIANTS:
        raise UserError(f"variant {variant!r} is not one of {', '.join(COMPOSABLE_VARIANTS)}")
    c = params["composable"]
    return {"run_name": f"composable/{subset}/{variant}/seed{seed}", "subset": subset, "variant": variant,
            "seed": int(seed), "classes": list(subsets[subset]), "model": c["model"], "train": c["train"]}


def composable_tables_config(params: dict, *_run) -> dict:
    """What the composable tables depend on: the runs and the subsets whose evaluations they read."""
    return {"runs": [list(r) for r in composable_runs(params)], "subsets": list(params["composable"]["subsets"]),
            "variants": list(params["composable"]["variants"])}


def prior_runs(params: dict) -> list[tuple[str, float, int]]:
    """(subset, p_mask, seed) for every recomposition prior `all` trains."""
    c = params["composable"]
    return [(s, float(p), seed) for s in c["subsets"] for p in c["prior"]["p_masks"] for seed in c["seeds"]]


def prior_dir(subset: str, p_mask: float, seed: int) -> str:
    return f"results/composable/{subset}/prior-p{float(p_mask)}/seed{seed}"


def prior_config(params: dict, subset: str, p_mask: str | float, seed: int) -> dict:
    """Everything a prior run depends on: its subset's classes, the decomposition variant whose encoder it models,
    p_mask, the prior's model and training settings."""
    subsets = params["stems"]["subsets"]
    if subset not in subsets:
        raise UserError(f"subset {subset!r} is not defined under stems.subsets (defined: {', '.join(subsets)})")
    try:
        p = float(str(p_mask).removeprefix("p"))
    except ValueError:
        raise UserError(f"p_mask {p_mask!r} is not a number in (0, 1]") from None
    if not 0 < p <= 1:
        raise UserError(f"p_mask {p} is not in (0, 1]")
    pc = params["composable"]["prior"]
    return {"run_name": f"composable/{subset}/prior-p{p}/seed{seed}", "subset": subset, "p_mask": p,
            "seed": int(seed), "classes": list(subsets[subset]), "decomposition": pc["decomposition"],
            "prior": {k: pc[k] for k in ("mask_scheme", "variant", "loss_on", "latent_norm", "unet")},
            "train": pc["train"]}


def generation_tables_config(params: dict, *_run) -> dict:
    return {"priors": [list(r) for r in prior_runs(params)]}
