"""Pretrained EnCodec 24 kHz weights: find them, check them, load them.

Order of search (``find_weights``):

1. a local file given in params (``codec.weights``);
2. ``$TORCH_HOME/hub/checkpoints/encodec_24khz-d7cc33bc.th`` (torch's hub cache, default
   ``~/.cache/torch/hub/checkpoints/``);
3. download from ``codec.url`` into that cache.

The file's sha256 must start with the 8 hex digits in its name (d7cc33bc), as the encodec package checks on its
own download (torch.hub does not check a file that is already in its cache; we do). With no weights and no
network the error says where to put the file and names the offline alternative: a codec of the same
architecture trained on the rendered stems inside the pipeline.
"""

from __future__ import annotations

from pathlib import Path

from musicdecomp.errors import UserError
from musicdecomp.io import download, verify_sha256

CHECKPOINT = "encodec_24khz-d7cc33bc.th"
URL = f"https://dl.fbaipublicfiles.com/encodec/v0/{CHECKPOINT}"


def checkpoint_name(url: str) -> str:
    """The checkpoint's file name, from its URL; its sha256 prefix is the part after the last '-'."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if "-" not in name:
        raise UserError(f"codec.url {url} does not end in a checkpoint name like encodec_24khz-d7cc33bc.th, "
                        f"whose last part is the sha256 prefix checked")
    return name


def resolve_source(codec: dict) -> str:
    """``codec.source`` with ``auto`` replaced by what it means on this machine now: ``pretrained`` where the
    weights are here (``codec.weights``, else the torch hub cache), else ``trained``. A ``codec.weights`` path that
    does not exist is an error, not a silent fallback to training a codec."""
    if codec["source"] != "auto":
        return codec["source"]
    if codec["weights"]:
        path = Path(codec["weights"]).expanduser()
        if not path.is_file():
            raise UserError(f"codec.weights: {path} does not exist; fix the path, or set codec.weights to null "
                            f"(codec.source auto then uses the torch hub cache, else trains a codec on the stems)")
        return "pretrained"
    return "pretrained" if (hub_checkpoint_dir() / checkpoint_name(codec["url"])).is_file() else "trained"


def checksum_prefix(name: str = CHECKPOINT) -> str:
    return name.rsplit("-", 1)[1].split(".")[0]


def hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(local: str | None = None, checkpoint: str = CHECKPOINT, url: str | None = None,
                 allow_download: bool = True) -> Path:
    """The path of verified weights named ``checkpoint`` (see the module docstring for the order of search)."""
    url = url or URL.replace(CHECKPOINT, checkpoint)
    fix = f"delete it and fetch {checkpoint} again from {url}"
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise UserError(f"codec.weights: {path} does not exist; fix the path, or set it to null to use "
                            f"{hub_checkpoint_dir() / checkpoint} or a download")
        verify_sha256(path, checksum_prefix(checkpoint), fix)
        return path
    cached = hub_checkpoint_dir() / checkpoint
    if not cached.is_file():
        if not allow_download:
            raise UserError(missing_message(checkpoint, url))
        download(url, cached, fix=missing_message(checkpoint, url))
    verify_sha256(cached, checksum_prefix(checkpoint), fix)
    return cached


def missing_message(checkpoint: str = CHECKPOINT, url: str = URL) -> str:
    return (f"pretrained EnCodec weights {checkpoint} are not available (no codec.weights file, none in the torch "
            f"hub cache, no network): download {url} elsewhere and put it at {hub_checkpoint_dir() / checkpoint} "
            f"(or set codec.weights to its path), or use the offline alternative, codec.source: trained "
            f"(an EnCodec-architecture codec trained on the rendered stems inside the pipeline)")


def load_pretrained(path: Path, bandwidth: float = 24.0):
    """The EnCodec 24 kHz model with the verified weights at ``path``, set to ``bandwidth`` kbps, in eval mode."""
    import torch  # lazy, as the model: finding weights (the pipeline's parameter resolution) needs neither

    from musicdecomp.models.encodec import build_encodec

    model = build_encodec(bandwidth)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise UserError(f"{path} is not an EnCodec 24 kHz state dict ({type(e).__name__}: {str(e)[:120]}); "
                        f"fetch {CHECKPOINT} again") from None
    return model.eval()

