"""Which codec the pipeline uses, and the ``codec`` step that makes it available as ``results/codec/model.pt``.

``codec.source``:

* ``pretrained``: the published EnCodec 24 kHz weights (``codec.weights``, else the torch hub cache, else a
  download; see musicdecomp.codec.weights);
* ``trained``: the offline alternative, the same architecture trained on the rendered stems (codec/train.py);
* ``auto`` (default): ``pretrained`` where the weights are already on this machine (``codec.weights`` or the hub
  cache; never a download), else ``trained``. The choice is made when the parameters are resolved and is part of
  the step's slice, so Snakemake reruns the codec step (and everything downstream) when it changes. DVC tracks
  parameter keys, not files outside the repository: after adding the weights, run ``dvc repro -f codec``.

Either way the step writes the same two files: ``model.pt`` ({state_dict, bandwidth, source, origin, sha256})
and ``codec.json`` (a summary), so everything downstream (code caching, evaluation, the decomposition model)
loads the codec with ``load_codec`` and never asks where it came from.
"""

from __future__ import annotations

from pathlib import Path

from musicdecomp.errors import UserError
from musicdecomp.io import load_torch

MODEL_FILE = "model.pt"


def resolve_source(codec: dict) -> str:
    """``codec.source`` with ``auto`` replaced by what it means on this machine now."""
    if codec["source"] != "auto":
        return codec["source"]
    from musicdecomp.codec.weights import hub_checkpoint_dir

    local = codec["weights"] and Path(codec["weights"]).expanduser().is_file()
    return "pretrained" if local or (hub_checkpoint_dir() / checkpoint_name(codec["url"])).is_file() else "trained"


def checkpoint_name(url: str) -> str:
    """The checkpoint's file name, from its URL; its sha256 prefix is the part after the last '-'."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if "-" not in name:
        raise UserError(f"codec.url {url} does not end in a checkpoint name like encodec_24khz-d7cc33bc.th, "
                        f"whose last part is the sha256 prefix checked")
    return name


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


def prepare_codec(cfg: dict, stems_dir: str | Path, out_dir: str | Path, device: str = "auto",
                  tracking: dict | None = None, time_limit: float | None = None) -> dict:
    """Find (pretrained) or train (trained, resumable in ``<out_dir>/trained``) the codec; write
    ``<out_dir>/model.pt`` and ``<out_dir>/codec.json``. Training that stops at ``time_limit`` (seconds) writes
    neither and returns ``{"stopped_at": step}``."""
    import torch

    from musicdecomp.io import atomic_path, sha256_of, write_json
    from musicdecomp.logs import get_logger

    log = get_logger("codec")
    out_dir = Path(out_dir)
    if cfg["source"] == "pretrained":
        from musicdecomp.codec.weights import find_weights, load_pretrained

        origin = find_weights(cfg["weights"], checkpoint=checkpoint_name(cfg["url"]), url=cfg["url"])
        model = load_pretrained(origin, cfg["bandwidth"])
        extra: dict = {}
    elif cfg["source"] == "trained":
        from musicdecomp.codec.model import build_encodec
        from musicdecomp.codec.train import train_codec
        from musicdecomp.train.loop import load_best

        run_dir = out_dir / "trained"
        summary = train_codec(cfg["trained"], stems_dir, run_dir, device=device, tracking=tracking,
                              time_limit=time_limit)
        if "stopped_at" in summary:
            return summary
        model = build_encodec(cfg["bandwidth"])
        model.load_state_dict(load_best(run_dir)["model"])
        origin = run_dir / "best.pt"
        extra = {"training": {k: summary[k] for k in ("steps", "best_step", "best_val_score", "device",
                                                      "wall_seconds")}}
    else:
        raise UserError(f"codec.source {cfg['source']!r} is not pretrained or trained (auto is resolved before)")
    info = {"source": cfg["source"], "origin": str(origin), "sha256": sha256_of(origin),
            "bandwidth": cfg["bandwidth"], "n_q": model.quantizer.get_num_quantizers_for_bandwidth(
                model.frame_rate, cfg["bandwidth"]), "frame_rate": model.frame_rate,
            "sample_rate": model.sample_rate, "parameters": sum(p.numel() for p in model.parameters()), **extra}
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        torch.save({"state_dict": model.state_dict(), **info}, tmp)
    write_json(out_dir / "codec.json", info)
    log.info("codec: %s (%s), %g kbps, %d codebooks", info["source"], origin, info["bandwidth"], info["n_q"])
    return info


def load_codec(path: str | Path):
    """The codec written by ``prepare_codec`` (``results/codec/model.pt``), in eval mode, and its summary."""
    from musicdecomp.codec.model import build_encodec

    payload = load_torch(path, "a codec written by the codec step",
                         "run the codec step first (snakemake results/codec/model.pt)",
                         "delete it and run the codec step again")
    model = build_encodec(payload["bandwidth"])
    model.load_state_dict(payload.pop("state_dict"))
    return model.eval(), payload
