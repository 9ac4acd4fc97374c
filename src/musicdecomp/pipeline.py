"""The pipeline's steps: which parameters and which package files each one depends on.

Snakemake (workflow/rules/common.smk) and DVC (dvc.yaml) both follow this table; a test checks dvc.yaml
against it, so the two tools rerun a step for the same reasons: a change in one of its parameters, in one
of its code files, or in an input file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from musicdecomp import sweep
from musicdecomp.codec.source import codec_config

PACKAGE_DIR = "src/musicdecomp"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Step:
    params: tuple[str, ...]
    code: tuple[str, ...]
    per_dataset: bool = False
    # the render step also depends on every dataset's program list (see config.render_programs)
    uses_all_programs: bool = False
    # steps whose slice is assembled by a function of (params, dataset, variant, seed) rather than cut from
    # ``params`` (which then only lists what is validated and what DVC tracks); per_run: it needs all three
    resolve: Callable | None = None
    per_run: bool = False
    # the shape of a resolved slice, checked when a step is handed one (config.check_slice): its top-level
    # ``fields``, and its ``sections`` as (path in the slice, the params.yaml key it holds); a path ending in
    # '?' may be absent, but not when its first part is present; '{kind}' is filled from the slice
    fields: tuple[str, ...] = ()
    sections: tuple[tuple[str, str], ...] = ()
    check: Callable | None = None  # further rules of a resolved slice: (slice) -> the problem, or None

    def param_keys(self, params: dict, dataset: str | None = None) -> list[str]:
        keys = [k.format(dataset=dataset) for k in self.params]
        if self.uses_all_programs:
            keys += [f"datasets.{name}.programs" for name in params["datasets"]]
        return keys

    def dvc_param_keys(self, dataset: str | None = None) -> list[str]:
        """What DVC tracks for this step: the slice's keys, and all datasets where programs are pooled."""
        keys = [k.format(dataset=dataset) for k in self.params]
        return keys + (["datasets"] if self.uses_all_programs else [])

    def code_files(self) -> list[str]:
        return [f"{PACKAGE_DIR}/{c}" for c in self.code]

    def code_id(self) -> dict[str, str]:
        """A short sha256 of each package file the step depends on, as installed (training checkpoints record
        it, so a run resumed with other code says so)."""
        here = Path(__file__).resolve().parent
        return {c: hashlib.sha256((here / c).read_bytes()).hexdigest()[:16] for c in self.code}


STEPS: dict[str, Step] = {
    "fetch_jsb": Step(params=("data.jsb.source",), code=("data/jsb.py",)),
    "chords": Step(params=("data.jsb.chords",), code=("data/jsb.py",)),
    "render": Step(params=("data.render",), code=("data/render.py",), uses_all_programs=True),
    "features": Step(params=("data.mel", "datasets.{dataset}"), code=("data/datasets.py", "data/mel.py"),
                     per_dataset=True),
    "figures": Step(params=("figures", "data.mel.mask_db"), code=("data/figures.py",), per_dataset=True),
    "fetch_jsb16": Step(params=("data.jsb16.source",), code=("data/jsb.py", "data/stems.py")),
    "stems": Step(params=("stems", "data.render.soundfont", "data.render.reverb", "data.render.chorus"),
                  code=("data/stems.py", "data/drums.py", "data/chunks.py", "data/render.py")),
    # the codec (pretrained weights, or trained on the stems), its codes per split, its reconstruction table
    "codec": Step(params=("codec.source", "codec.weights", "codec.url", "codec.bandwidth", "codec.trained",
                          "stems.sample_rate"),
                  code=("codec/source.py", "codec/weights.py", "codec/model.py", "codec/train.py", "eval/msstft.py",
                        "train/loop.py"), resolve=codec_config,
                  fields=("source", "bandwidth"),
                  sections=(("bandwidth", "codec.bandwidth"), ("weights?", "codec.weights"), ("url?", "codec.url"),
                            *((f"trained.{k}?", f"codec.trained.{k}") for k in (
                                "seed", "crop_seconds", "l1_weight", "mel_weight", "commit_weight", "train")),
                            ("trained.bandwidth?", "codec.bandwidth"), ("trained.sample_rate?", "stems.sample_rate"))),
    "cache_codes": Step(params=("codec.encode_batch",), code=("codec/latents.py", "codec/model.py", "data/stems.py")),
    "eval_codec": Step(params=("codec.eval",), code=("eval/codec.py", "eval/msstft.py", "codec/model.py",
                                                     "codec/latents.py", "data/stems.py")),
    "mlflow_init": Step(params=("tracking",), code=("train/tracking.py",)),
    # one MusicSlots run per (dataset, variant, seed)
    "train_musicslots": Step(params=("musicslots.model", "musicslots.train"),
                             code=("models/encoder.py", "models/slot_attention.py", "models/decoder.py",
                                   "models/musicslots.py", "train/musicslots.py", "train/loop.py",
                                   "train/schedule.py", "eval/metrics.py"),
                             per_dataset=True, resolve=sweep.train_config, per_run=True,
                             fields=("run_name", "dataset", "variant", "seed"),
                             sections=(("model", "musicslots.model"), ("train", "musicslots.train"))),
    "eval_musicslots": Step(params=("musicslots.eval",),
                            code=("eval/musicslots.py", "eval/metrics.py", "eval/listen.py")),
    "train_baseline": Step(params=("baselines.vae", "baselines.cnn"),
                           code=("models/baselines.py", "train/baselines.py", "train/loop.py", "eval/accuracy.py"),
                           per_dataset=True, resolve=sweep.baseline_config, per_run=True,
                           fields=("run_name", "dataset", "baseline", "seed", "kind"),
                           sections=(("model", "baselines.{kind}.model"), ("train", "baselines.{kind}.train")),
                           check=sweep.check_baseline_slice),
    "probe": Step(params=("probe",), code=("eval/probes.py", "eval/accuracy.py", "models/baselines.py",
                                          "train/loop.py"), per_dataset=True, resolve=sweep.probe_config,
                  sections=(("train", "probe.train"),)),
    "tables": Step(params=("musicslots.model", "musicslots.sweep", "baselines", "probe.musicslots_variants"),
                   code=("eval/tables.py",), resolve=sweep.tables_config, fields=("runs", "probed", "baselines")),
}
