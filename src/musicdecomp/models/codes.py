"""Cache the codec codes of one split of the stems: int16 (n_q, 525) per 7-s signal.

Each class is encoded once per chunk position, however many subsets keep that chunk (drums+bass and
drums+bass+piano share their drums), and each subset's mixture (the mean of its classes) is encoded on its own:
EnCodec is nonlinear, so enc(mix) is not a function of the stems' codes. ``subset_codes`` returns the codes of
one subset in the order of the index's chunk list; ``codes_to_latent`` turns them into the (128, 525) latents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from musicdecomp.data.stems import read_position
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, load_torch, read_json
from musicdecomp.logs import get_logger, progress
from musicdecomp.models.encodec import codes_to_latent, encode_codes

log = get_logger("latents")


def cache_codes(model, index_path: str | Path, out: str | Path, batch: int = 8,
                device: torch.device | str = "cpu", codec_info: dict | None = None) -> dict:
    index_path = Path(index_path)
    index = read_json(index_path, "rerun the stems step")
    folder, subsets = index_path.parent / index["folder"], index["subsets"]
    positions = sorted({tuple(p) for name in subsets for p in index["chunks"][name]})
    where = {p: i for i, p in enumerate(positions)}
    classes = [c for c in index["classes"] if any(c in members for members in subsets.values())]
    col = {c: index["classes"].index(c) for c in classes}
    kept = {name: {tuple(p) for p in index["chunks"][name]} for name in subsets}
    codes: dict[str, list[torch.Tensor]] = {c: [] for c in classes}
    mixes: dict[str, list[torch.Tensor]] = {name: [] for name in subsets}
    mix_pos: dict[str, list[int]] = {name: [] for name in subsets}
    model = model.to(device).eval()
    for start in progress(range(0, len(positions), batch), desc=f"codes {index_path.stem}", unit="batch"):
        block = positions[start:start + batch]
        audio = torch.from_numpy(np.stack([read_position(index, folder, p) for p in block]))  # (B, n_classes, n)
        for c in classes:
            codes[c].append(encode_codes(model, audio[:, col[c]].to(device)).cpu())
        for name, members in subsets.items():
            sel = [j for j, p in enumerate(block) if p in kept[name]]
            if sel:
                mix = audio[sel][:, [col[c] for c in members]].mean(1)
                mixes[name].append(encode_codes(model, mix.to(device)).cpu())
                mix_pos[name] += [where[block[j]] for j in sel]

    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int16)

    out_subsets = {}
    for name, members in subsets.items():
        items = torch.tensor([where[tuple(p)] for p in index["chunks"][name]], dtype=torch.long)
        # mixes were encoded in position order; put them in the index's chunk order
        rank = {pos: k for k, pos in enumerate(mix_pos[name])}
        mix = cat(mixes[name])
        out_subsets[name] = {"classes": list(members), "items": items,
                             "mix": mix[[rank[int(i)] for i in items]] if len(items) else mix}
    payload = {"split": index_path.stem, "positions": torch.tensor(positions, dtype=torch.long).reshape(-1, 2),
               "classes": {c: cat(v) for c, v in codes.items()}, "subsets": out_subsets,
               "chunk_len": index["chunk_len"], "frame_rate": model.frame_rate, "bandwidth": model.bandwidth,
               # the codec's identity only (not its training wall time), so equal codes make equal files
               "codec": {k: v for k, v in (codec_info or {}).items() if k in ("source", "sha256", "bandwidth", "n_q")}}
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    shapes = {name: list(s["mix"].shape) for name, s in out_subsets.items()}
    log.info("%s: %d chunk positions, %d classes, mixes %s -> %s", index_path.stem, len(positions), len(classes),
             shapes, out)
    return {"positions": len(positions), "classes": classes, "mix_shapes": shapes}


def subset_codes(payload: dict, subset: str) -> dict[str, torch.Tensor]:
    """{class: (N, n_q, T'), "mix": (N, n_q, T')} codes of ``subset``, in the index's chunk order."""
    if subset not in payload["subsets"]:
        raise UserError(f"subset {subset!r} is not in the cached codes (cached: {', '.join(payload['subsets'])}); "
                        f"add it to stems.subsets and rerun the stems and codes steps")
    s = payload["subsets"][subset]
    return {**{c: payload["classes"][c][s["items"]] for c in s["classes"]}, "mix": s["mix"]}


def load_codes(path: str | Path) -> dict:
    return load_torch(path, "a codes file", "run the cache_codes step first", "rerun the cache_codes step")


CODEBOOKS = "codebooks"  # the key of a codebooks file: the quantizer's vectors alone, to decode codes without encodec


def codebooks_of(codec) -> torch.Tensor:
    """(n_q, bins, dim) the codec quantizer's codebook vectors at its bandwidth (EnCodec's project_out is the
    identity for the 24 kHz model: a latent is the sum of one vector per codebook)."""
    layers = codec.quantizer.vq.layers[: codec.quantizer.get_num_quantizers_for_bandwidth(codec.frame_rate,
                                                                                          codec.bandwidth)]
    if any(not isinstance(layer.project_out, torch.nn.Identity) for layer in layers):
        raise UserError("this codec projects its codebook vectors: decode its codes with the codec itself")
    return torch.stack([layer._codebook.embed.detach().float().cpu() for layer in layers])


def latents_from_codebooks(codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(B, n_q, T') codes -> (B, dim, T') latents: the sum over codebooks of each code's vector (what the codec's
    quantizer decodes, without the codec)."""
    n_q = codes.shape[1]
    picked = codebooks[torch.arange(n_q, device=codes.device)[None, :, None], codes.long()]  # (B, n_q, T', dim)
    return picked.sum(dim=1).transpose(1, 2)


def write_codebooks(codec, codec_info: dict, out: str | Path) -> None:
    """A codebooks file: the quantizer's vectors and the codec's summary (what codes decoded with it need)."""
    with atomic_path(out) as tmp:
        torch.save({CODEBOOKS: codebooks_of(codec), **codec_info}, tmp)


def latent_decoder(path: str | Path):
    """(codes -> latents, the codec's summary) from the codec step's model.pt (needs encodec) or a codebooks file
    (``write_codebooks``; decodes with torch alone, e.g. on a GPU machine without encodec)."""
    payload = load_torch(path, "a codec (model.pt) or codebooks file", "run the codec step first",
                         "run the codec step again")
    if CODEBOOKS in payload:
        books = payload.pop(CODEBOOKS)
        return (lambda c: latents_from_codebooks(books.to(c.device), c)), payload
    from musicdecomp.models.encodec import load_codec

    codec, info = load_codec(path)
    return (lambda c: codes_to_latent(codec.to(c.device), c)), info


@torch.no_grad()
def subset_latents(codec, codec_info: dict, codes_path: str | Path, subset: str, classes: list[str] | None = None,
                   device: torch.device | str = "cpu", with_sources: bool = False, limit: int | None = None,
                   batch: int = 64) -> dict[str, torch.Tensor]:
    """The latents of ``subset`` in one cached split, on ``device``: ``mix`` (N, 128, T') and, ``with_sources``,
    ``sources`` (N, n_classes, 128, T') in the subset's class order (its first ``limit`` chunks only). ``codec``: the
    codec model, or a function from codes to latents (``latent_decoder``).

    Refuses codes cached with another codec than ``codec_info`` (the codec step's summary), a subset the codes
    lack, and a subset whose classes are not ``classes`` (a run trained on other sources)."""
    payload = load_codes(codes_path)
    cached = payload.get("codec", {})
    if payload["bandwidth"] != codec_info["bandwidth"] or cached.get("sha256") != codec_info["sha256"]:
        raise UserError(f"{codes_path} was cached with another codec than results/codec/model.pt "
                        f"(sha256 {str(cached.get('sha256'))[:12]} vs {codec_info['sha256'][:12]}); rerun the "
                        f"cache_codes step")
    codes = subset_codes(payload, subset)
    members = payload["subsets"][subset]["classes"]
    if classes is not None and list(classes) != list(members):
        raise UserError(f"subset {subset!r} of {codes_path} has the classes {members}, not {list(classes)} as the "
                        f"run expects (N = {len(classes)}); rerun the stems and codes steps, or train the run again")
    n = len(codes["mix"]) if limit is None else min(limit, len(codes["mix"]))
    if n == 0:
        raise UserError(f"{codes_path} holds no chunk of subset {subset!r}; render more stems (stems.max_chorales)")

    to_latent = codec if callable(codec) and not isinstance(codec, torch.nn.Module) else (
        lambda c: codes_to_latent(codec.to(device), c))

    def decode(c: torch.Tensor) -> torch.Tensor:
        return torch.cat([to_latent(c[i:i + batch].to(device)).float() for i in range(0, n, batch)])

    out = {"mix": decode(codes["mix"][:n])}
    if with_sources:
        out["sources"] = torch.stack([decode(codes[c][:n]) for c in members], dim=1)
    return out


def codes_data_id(codes_dir: str | Path, subset: str) -> str:
    """What a run trains on: a short hash of the subset's train and valid codes (each class's and the mixture's, in
    order) and of the codec that made them; a codes file reduced to the subset (as staged for a GPU machine) gives
    the same id."""
    h = hashlib.sha256(subset.encode())
    for split in ("train", "valid"):
        payload = load_codes(Path(codes_dir) / f"{split}.pt")
        h.update(str(payload.get("codec", {}).get("sha256")).encode())
        for name, codes in subset_codes(payload, subset).items():
            h.update(name.encode() + codes.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
