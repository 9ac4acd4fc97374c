"""Cache the codec codes of every kept chunk of a stems subset: each class and the mixture, int16
(n_q, 525) per 7-s signal. ``codes_to_latent`` turns them into the (128, 525) latents."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from musicdecomp.codec.model import encode_codes
from musicdecomp.data.stems import chunk_audio
from musicdecomp.io import atomic_path
from musicdecomp.logs import get_logger, progress

log = get_logger("latents")


def cache_codes(model, index_path: str | Path, subset: str, out: str | Path, batch: int = 8,
                device: torch.device | str = "cpu", codec_info: dict | None = None) -> dict:
    index_path = Path(index_path)
    index = json.loads(index_path.read_text())
    classes = index["subsets"][subset]
    n = len(index["chunks"][subset])
    codes: dict[str, list[torch.Tensor]] = {c: [] for c in classes + ["mix"]}
    model = model.to(device).eval()
    for start in progress(range(0, n, batch), desc=f"codes {index_path.stem} {subset}", unit="batch"):
        items = [chunk_audio(index, index_path.parent, subset, i) for i in range(start, min(start + batch, n))]
        for name in classes + ["mix"]:
            audio = torch.stack([torch.from_numpy(stems[name] if name != "mix" else mix) for stems, mix in items])
            codes[name].append(encode_codes(model, audio.to(device)).cpu())
    payload = {"subset": subset, "classes": classes, "chunks": index["chunks"][subset],
               "codes": {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.int16) for k, v in codes.items()},
               "frame_rate": model.frame_rate, "bandwidth": model.bandwidth, "codec": codec_info or {}}
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    log.info("%s %s: %d chunks -> %s", index_path.stem, subset, n, out)
    return {"chunks": n, "shape": list(payload["codes"]["mix"].shape)}
