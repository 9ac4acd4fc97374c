"""Parameters: load params.yaml (plus override files) and validate every knob against ``SCHEMA``.

params.yaml is the one source of every knob. Snakemake reads it as its configfile (``--configfile`` files
merge on top) and DVC reads it as its params file; both hand each step only the slice it uses
(``musicdecomp.pipeline.step_config``), so changing one knob reruns only the steps that depend on it.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
from pathlib import Path
from typing import Any, Callable

from musicdecomp.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = "params.yaml"


# --- loading -------------------------------------------------------------------------------------------

def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(paths: list[str | Path]) -> dict:
    """Load and merge YAML parameter files, later files overriding earlier ones."""
    import yaml

    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"parameter file {path} does not exist; pass an existing file with --params")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path} must hold a mapping of parameters at the top level")
        merged = deep_merge(merged, loaded)
    return merged


def get(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"parameter {dotted} is missing; add it to params.yaml (see the README)")
        node = node[part]
    return node


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay whole)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# --- validation ----------------------------------------------------------------------------------------

Check = tuple[Callable[[Any], bool], str]


def _num(lo: float | None = None, hi: float | None = None, integer: bool = False, strict_lo: bool = False) -> Check:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if strict_lo else v < lo):
            return False
        return hi is None or v <= hi
    kind = "an integer" if integer else "a number"
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if strict_lo else '>='} {lo}")
    if hi is not None:
        bounds.append(f"<= {hi}")
    return ok, kind + (" " + " and ".join(bounds) if bounds else "")


def _optional(check: Check) -> Check:
    fn, desc = check
    return (lambda v: v is None or fn(v)), f"null or {desc}"


def _bool() -> Check:
    return (lambda v: isinstance(v, bool)), "true or false"


def _str() -> Check:
    return (lambda v: isinstance(v, str) and v != ""), "a non-empty string"


def _split() -> Check:
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and len(v) == 3 and all(_num(0, 1)[0](x) for x in v)
                and abs(sum(v) - 1.0) < 1e-6 and all(x > 0 for x in v))
    return ok, "three positive fractions [train, valid, test] that sum to 1"


def _programs() -> Check:
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                and all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 127 for p in v))
    return ok, "a non-empty list of distinct General MIDI program numbers 0-127"


def _str_list() -> Check:
    return (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)), "a list of names or paths"


def _choice(*options: str) -> Check:
    return (lambda v: v in options), "one of " + ", ".join(options)


def _choice_list(*options: str) -> Check:
    return (lambda v: isinstance(v, list) and all(x in options for x in v)), "a list of " + ", ".join(options)


def _int_list() -> Check:
    return (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                  for x in v)), "a list of non-negative integers"


def _pos_int_list() -> Check:
    return (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  and x >= 1 for x in v)), "a non-empty list of positive integers"


def _sha256() -> Check:
    def ok(v: Any) -> bool:
        return v is None or (isinstance(v, str) and len(v) >= 8 and all(c in "0123456789abcdef" for c in v.lower()))
    return ok, "null or a hex sha256 digest (or a prefix of at least 8 digits)"


def _train_schema(prefix: str) -> dict[str, Check]:
    """The settings of one training loop (musicdecomp.train.loop)."""
    return {
        f"{prefix}.steps": _num(1, integer=True),
        f"{prefix}.batch_size": _num(2, integer=True),
        f"{prefix}.lr": _num(0, 1, strict_lo=True),
        f"{prefix}.warmup_steps": _num(0, integer=True),
        f"{prefix}.cosine_steps": _num(1, integer=True),
        f"{prefix}.grad_clip": _optional(_num(0, strict_lo=True)),
        f"{prefix}.amp": _choice("fp16", "bf16", "none"),
        f"{prefix}.log_every": _num(1, integer=True),
        f"{prefix}.eval_every": _num(1, integer=True),
        f"{prefix}.val_examples": _optional(_num(1, integer=True)),
        f"{prefix}.eval_batch_size": _num(1, integer=True),
        f"{prefix}.checkpoint_every": _num(1, integer=True),
        f"{prefix}.checkpoint_minutes": _num(0, strict_lo=True),
    }


def _unet_schema(prefix: str) -> dict[str, Check]:
    """The settings of a 1-D U-Net (musicdecomp.models.unet1d), its levels' channels after the data's."""
    return {
        f"{prefix}.channels": _pos_int_list(),
        f"{prefix}.kernels": _pos_int_list(),
        f"{prefix}.strides": _pos_int_list(),
        f"{prefix}.attention": (lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v),
                                "a list of true/false, one per level"),
        f"{prefix}.bottleneck_attention": _bool(),
        f"{prefix}.emb_dim": _num(2, 4096, integer=True),
        f"{prefix}.head_dim": _num(1, 4096, integer=True),
        f"{prefix}.noise_embedding": _choice("sinusoidal", "constant"),
        f"{prefix}.dropout": _num(0, 0.99),
    }


# Every leaf parameter, by dotted name; '*' matches one level (a dataset name).
SCHEMA: dict[str, Check] = {
    "data.jsb.source.json_path": _optional(_str()),
    "data.jsb.source.local_dirs": _str_list(),
    "data.jsb.source.filename": _str(),
    "data.jsb.source.url": _str(),
    "data.jsb.source.sha256": _sha256(),
    "data.jsb16.source.json_path": _optional(_str()),
    "data.jsb16.source.local_dirs": _str_list(),
    "data.jsb16.source.filename": _str(),
    "data.jsb16.source.url": _str(),
    "data.jsb16.source.sha256": _sha256(),
    "data.jsb.chords.max_voices": _num(2, 16, integer=True),
    "data.jsb.chords.min_notes": _num(1, 16, integer=True),
    "data.jsb.chords.split": _split(),
    "data.jsb.chords.seed": _num(0, integer=True),
    "data.jsb.chords.max_chords": _optional(_num(10, integer=True)),
    "data.render.soundfont": _str(),
    "data.render.synth_rate": _num(8000, 192000, integer=True),
    "data.render.sample_rate": _num(4000, 192000, integer=True),
    "data.render.bpm": _num(1, 1000, strict_lo=True),
    "data.render.quarter_lengths": _num(0, 64, strict_lo=True),
    "data.render.velocity": _num(1, 127, integer=True),
    "data.render.lead_zeros": _num(0, integer=True),
    "data.render.n_samples": _num(1024, integer=True),
    "data.render.gain": _num(0, 10, strict_lo=True),
    "data.render.reverb": _bool(),
    "data.render.chorus": _bool(),
    "data.render.pcm16": _bool(),
    "data.render.note_on_at": _num(0, 1 << 20, integer=True),
    "data.mel.n_fft": _num(16, 16384, integer=True),
    "data.mel.hop_length": _num(1, 16384, integer=True),
    "data.mel.n_mels": _num(1, 1024, integer=True),
    "data.mel.f_min": _num(0),
    "data.mel.f_max": _num(0, strict_lo=True),
    "data.mel.top_db": _optional(_num(0, strict_lo=True)),
    "data.mel.amin": _num(0, strict_lo=True),
    "data.mel.n_frames": _num(1, integer=True),
    "data.mel.mask_db": _num(-200, 200),
    "datasets.*.programs": _programs(),
    "datasets.*.assignments_per_chord": _num(1, integer=True),
    "datasets.*.seed": _num(0, integer=True),
    "musicslots.model.num_slots": _num(1, 64, integer=True),
    "musicslots.model.dim": _num(1, 4096, integer=True),
    "musicslots.model.iters": _num(1, 64, integer=True),
    "musicslots.model.enc_channels": _num(1, 4096, integer=True),
    "musicslots.model.enc_layers": _num(1, 16, integer=True),
    "musicslots.model.kernel": _num(1, 15, integer=True),
    "musicslots.model.time_stride": _num(1, 4, integer=True),
    "musicslots.model.mask": _choice("softmax", "sigmoid", "none"),
    "musicslots.model.implicit": _bool(),
    "musicslots.model.attention": _choice("standard", "official"),
    **_train_schema("musicslots.train"),
    "musicslots.eval.iters": _optional(_num(1, 64, integer=True)),
    "musicslots.eval.amp": _choice("none", "bf16", "fp16"),
    "musicslots.sweep.datasets": _str_list(),
    "musicslots.sweep.seeds": _int_list(),
    "musicslots.sweep.grid.mask": _choice_list("softmax", "sigmoid", "none"),
    "musicslots.sweep.grid.time_stride": _int_list(),
    "musicslots.sweep.grid.implicit": (lambda v: isinstance(v, list) and all(isinstance(x, bool) for x in v),
                                       "a list of true/false"),
    "musicslots.sweep.num_slots": _int_list(),
    "musicslots.sweep.single_instrument": _str_list(),
    "baselines.datasets": _str_list(),
    "baselines.seeds": _int_list(),
    "baselines.vae.kld_weights": (lambda v: isinstance(v, list)
                                  and all(_num(0)[0](x) and isinstance(x, float) for x in v),
                                  "a list of floats >= 0 (0.0, not 0)"),
    "baselines.vae.model.latent": _num(1, 4096, integer=True),
    "baselines.vae.model.channels": _num(1, 4096, integer=True),
    **_train_schema("baselines.vae.train"),
    "baselines.cnn.model.channels": _num(1, 4096, integer=True),
    **_train_schema("baselines.cnn.train"),
    "probe.musicslots_variants": _str_list(),
    **_train_schema("probe.train"),
    "stems.source": _choice("rendered", "slakh"),
    "stems.slakh_root": _optional(_str()),
    "stems.sample_rate": _num(8000, 192000, integer=True),
    "stems.renders_per_chorale": _num(1, 100, integer=True),
    "stems.max_chorales": _optional(_num(1, integer=True)),
    "stems.tempo": (lambda v: isinstance(v, list) and len(v) == 2 and all(_num(20, 400)[0](x) for x in v)
                    and v[0] <= v[1], "[low, high] bpm between 20 and 400"),
    "stems.bass_programs": _programs(),
    "stems.piano_programs": _programs(),
    "stems.drum_kits": _programs(),
    "stems.velocity": _num(1, 127, integer=True),
    "stems.gain": _num(0, 10, strict_lo=True),
    "stems.tail_seconds": _num(0),
    "stems.seed": _num(0, integer=True),
    "stems.chunk_seconds": _num(0.1, strict_lo=True),
    "stems.min_rms": _num(0),
    "stems.subsets.*": _choice_list("drums", "bass", "piano"),
    "codec.source": _choice("auto", "pretrained", "trained"),
    "codec.weights": _optional(_str()),
    "codec.url": _str(),
    "codec.bandwidth": ((lambda v: v in (1.5, 3.0, 6.0, 12.0, 24.0) and not isinstance(v, bool)),
                        "one of 1.5, 3.0, 6.0, 12.0, 24.0 (EnCodec 24 kHz bandwidths, kbps)"),
    "codec.encode_batch": _num(1, integer=True),
    "codec.trained.seed": _num(0, integer=True),
    "codec.trained.crop_seconds": _num(0.05, 60),
    "codec.trained.l1_weight": _num(0),
    "codec.trained.mel_weight": _num(0),
    "codec.trained.commit_weight": _num(0),
    **_train_schema("codec.trained.train"),
    "codec.eval.max_chunks": _optional(_num(1, integer=True)),
    "codec.eval.n_examples": _num(1, 16, integer=True),
    "codec.eval.seed": _num(0, integer=True),
    "composable.subsets": _str_list(),
    "composable.variants": _choice_list("mean", "sum", "min", "max", "supervised"),
    "composable.seeds": _int_list(),
    **_unet_schema("composable.model.unet"),
    "composable.model.encoder.channels": _pos_int_list(),
    "composable.model.encoder.kernel_size": _num(1, 31, integer=True),
    "composable.model.latent_norm": _choice("none", "global", "channel"),
    "composable.model.crop_frames": _num(8, 4096, integer=True),
    "composable.train.epochs": _num(1, integer=True),
    "composable.train.batch_size": _num(1, integer=True),
    "composable.train.lr": _num(0, 1, strict_lo=True),
    "composable.train.optimizer": _choice("adam", "adamw"),
    "composable.train.weight_decay": _num(0),
    "composable.train.warmup_steps": _num(0, integer=True),
    "composable.train.cosine_steps": _optional(_num(1, integer=True)),
    "composable.train.grad_clip": _optional(_num(0, strict_lo=True)),
    "composable.train.amp": _choice("fp16", "bf16", "none"),
    "composable.train.iadb_variant": _choice("c", "d"),
    "composable.train.log_every": _num(1, integer=True),
    "composable.train.eval_every": _num(1, integer=True),
    "composable.train.val_examples": _optional(_num(1, integer=True)),
    "composable.train.eval_batch_size": _num(1, integer=True),
    "composable.train.checkpoint_every": _num(1, integer=True),
    "composable.train.checkpoint_minutes": _num(0, strict_lo=True),
    "composable.eval.max_chunks": _optional(_num(1, integer=True)),
    "composable.eval.seed": _num(0, integer=True),
    "composable.eval.sample_steps": _num(1, 10000, integer=True),
    "composable.eval.batch_size": _num(1, integer=True),
    "composable.eval.n_examples": _num(0, 16, integer=True),
    "composable.baselines.methods": _choice_list("hpss", "repet_sim", "ft2d", "nmf", "rpca"),
    "composable.baselines.nmf_components": _num(1, 256, integer=True),
    "composable.prior.decomposition": _choice("mean", "sum", "min", "max"),
    "composable.prior.p_masks": (lambda v: isinstance(v, list) and len(v) > 0 and all(
        isinstance(x, float) and 0 < x <= 1 for x in v), "a list of floats in (0, 1] (1.0, not 1)"),
    "composable.prior.mask_scheme": _choice("bernoulli", "uniform"),
    "composable.prior.variant": _choice("c", "d"),
    "composable.prior.loss_on": _choice("masked", "all"),
    "composable.prior.latent_norm": _choice("none", "global", "channel"),
    **_unet_schema("composable.prior.unet"),
    **{f"composable.prior.{k}": v for k, v in _train_schema("train").items() if not k.endswith(".steps")},
    "composable.prior.train.epochs": _num(1, integer=True),
    "composable.prior.train.optimizer": _choice("adam", "adamw"),
    "composable.prior.train.weight_decay": _num(0),
    "composable.prior.train.cosine_steps": _optional(_num(1, integer=True)),
    "composable.prior.eval.max_chunks": _optional(_num(1, integer=True)),
    "composable.prior.eval.seed": _num(0, integer=True),
    "composable.prior.eval.sample_steps": _num(1, 10000, integer=True),
    "composable.prior.eval.variations": _num(1, 64, integer=True),
    "composable.prior.eval.batch_size": _num(1, integer=True),
    "composable.prior.eval.n_examples": _num(1, 16, integer=True),
    "composable.prior.eval.embedding": _choice("crepe-full", "crepe-tiny", "clap-laion-audio", "clap-laion-music"),
    "compute.gpu": (lambda v: v in ("auto", True, False, "true", "false"), "auto, true or false"),
    "compute.cpu_minutes": _num(0),
    "compute.released": _choice("use", "retrain"),
    "compute.reevaluate": (lambda v: isinstance(v, bool), "true or false"),
    "report.figure_runs": _num(0, 200, integer=True),
    "report.audio_runs": _num(0, 50, integer=True),
    "tracking.mlflow_uri": _optional(_str()),
    "tracking.experiment": _str(),
    "figures.n_examples": _num(1, 16, integer=True),
    "figures.seed": _num(0, integer=True),
}


def _schema_entry(key: str) -> Check | None:
    if key in SCHEMA:
        return SCHEMA[key]
    for pattern, check in SCHEMA.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
            return check
    return None


def _required_keys(flat: dict[str, Any]) -> list[str]:
    """Every schema key, with a '*' level (a dataset's name) spelled out for each name that ``flat`` uses
    there: a dataset defined without ``seed`` is missing ``datasets.<name>.seed``."""
    out = []
    for key in SCHEMA:
        parts = key.split(".")
        if "*" not in parts:
            out.append(key)
            continue
        i = parts.index("*")
        if i == len(parts) - 1:  # a mapping of free names (stems.subsets.*): none is required
            continue
        head = ".".join(parts[:i]) + "."
        names = sorted({k[len(head):].split(".")[0] for k in flat if k.startswith(head)})
        out += [".".join([*parts[:i], name, *parts[i + 1:]]) for name in names]
    return out


def validate(params: dict, prefix: str = "", fix: str | None = None) -> None:
    """Check every leaf under ``prefix`` (all when empty): known name, value in range, cross-field rules.
    ``fix`` replaces the advice that ends each error (by default: edit params.yaml)."""
    flat = flatten(params)
    for key, value in flat.items():
        if prefix and not (key == prefix or key.startswith(prefix + ".")):
            continue
        entry = _schema_entry(key)
        if entry is None:
            raise UserError(f"unknown parameter {key}; {fix or 'check its spelling against params.yaml'}")
        ok, desc = entry
        if not ok(value):
            raise UserError(f"parameter {key} = {value!r} is out of range: expected {desc}; "
                            f"{fix or 'fix it in params.yaml or your override file'}")
    for key in _required_keys(flat):
        if (not prefix or key.startswith(prefix + ".") or key == prefix) and key not in flat:
            if any(k.startswith(key + ".") for k in flat):
                continue
            raise UserError(f"parameter {key} is missing; {fix or 'add it to params.yaml (see the README)'}")
    if not prefix or prefix.startswith("data.mel") or prefix == "data":
        if "data" in params and "mel" in params["data"]:
            mel = params["data"]["mel"]  # (a step's slice may hold only some of it, e.g. mask_db)
            if {"f_min", "f_max"} <= mel.keys() and mel["f_max"] <= mel["f_min"]:
                raise UserError(f"parameter data.mel.f_max = {mel['f_max']} must exceed "
                                f"data.mel.f_min = {mel['f_min']}")
            if {"hop_length", "n_fft"} <= mel.keys() and mel["hop_length"] > mel["n_fft"]:
                raise UserError("parameter data.mel.hop_length must not exceed data.mel.n_fft")
    if (not prefix or prefix.startswith("codec")) and "codec" in params and "stems" in params:
        if params["stems"]["sample_rate"] != 24000:
            raise UserError(f"stems.sample_rate = {params['stems']['sample_rate']}, but the codec (EnCodec 24 kHz) "
                            f"needs 24000; set stems.sample_rate: 24000")
    if (not prefix or prefix.startswith("composable")) and "composable" in params and "stems" in params:
        check_composable(params)
    if (not prefix or prefix == "musicslots" or prefix.startswith("musicslots.sweep")) and "musicslots" in params:
        ms = params["musicslots"]
        sweep, base = ms["sweep"], ms["model"]
        # the ablations add runs beside the grid; listing a run twice would make DVC stages collide
        if base["num_slots"] in sweep["num_slots"]:
            raise UserError(f"musicslots.sweep.num_slots lists {base['num_slots']}, the base model's slot count, "
                            f"which the grid already trains; remove it")
        both = set(sweep["single_instrument"]) & set(sweep["datasets"])
        if both:
            raise UserError(f"musicslots.sweep.single_instrument repeats {sorted(both)} from musicslots.sweep.datasets")
        for ds in sweep["datasets"] + sweep["single_instrument"]:
            if ds not in params.get("datasets", {}):
                raise UserError(f"musicslots.sweep names dataset {ds!r}, "
                                "which datasets: in params.yaml does not define")


def check_composable(params: dict) -> None:
    """Cross-field rules of the composable-representations section: its subsets exist, the U-Net's lists agree, the
    crop fits the strides and the 525-frame chunks."""
    comp = params["composable"]
    subsets = params["stems"].get("subsets", {})
    for name in comp.get("subsets", []):
        if name not in subsets:
            raise UserError(f"composable.subsets names {name!r}, which stems.subsets does not define "
                            f"(defined: {', '.join(subsets)}); add it there or remove it")
    prior = comp.get("prior", {})
    if prior.get("loss_on") == "masked" and prior.get("variant") == "d":
        raise UserError("composable.prior.loss_on: masked needs composable.prior.variant: c (the given latents pass "
                        "through as the c form's prediction); use loss_on: all with variant d")
    unet = comp.get("model", {}).get("unet", {})
    if {"channels", "kernels", "strides", "attention"} <= unet.keys():
        levels = len(unet["channels"])
        if not len(unet["kernels"]) == len(unet["strides"]) == len(unet["attention"]) == levels:
            raise UserError(f"composable.model.unet: channels, kernels, strides and attention need one entry per "
                            f"level ({levels} channels given)")
        factor = math.prod(unet["strides"])
        crop = comp["model"].get("crop_frames")
        if crop is not None and crop % factor:
            raise UserError(f"composable.model.crop_frames = {crop} is not divisible by the product of "
                            f"composable.model.unet.strides ({factor}); pick a multiple of it")


def to_json(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def from_json(text: str) -> dict:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--config is not valid JSON ({e}); pass the output of step_config") from None
    if not isinstance(cfg, dict):
        raise UserError("--config must be a JSON object")
    return cfg
