"""Codec reconstruction on the test split (the composable-representations paper's Table 1 analogue).

For a seeded sample of test chunk positions (``codec.eval.max_chunks``; the paper uses 512 random test crops),
every class signal and every subset's mixture is decoded from its cached codes (codes -> latent -> audio, the
whole 7-s chunk) and compared with the original audio by the RAVE-style MS-STFT distance (decoded audio first,
as the paper's code). A class signal shared by several subsets is decoded once. Outputs: a JSON of every
figure, the table as CSV and Markdown (mean and std over chunks, with the paper's reported EnCodec row beside
it), a figure of original | decoded spectrograms and the latent, and WAV files of the same examples.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from musicdecomp.data.stems import read_position
from musicdecomp.device import pick_device
from musicdecomp.errors import UserError
from musicdecomp.eval.tables import paper_numbers
from musicdecomp.io import atomic_dir, atomic_path, read_json, write_json, write_text
from musicdecomp.logs import get_logger, progress
from musicdecomp.metrics.msstft import ms_stft_distance
from musicdecomp.models.codes import load_codes
from musicdecomp.models.encodec import codes_to_latent, latent_to_audio, load_codec

log = get_logger("eval_codec")



@torch.no_grad()
def _decode(model, latent: torch.Tensor, n: int) -> torch.Tensor:
    return latent_to_audio(model, latent)[..., :n].float().cpu()


def evaluate_codec(cfg: dict, model_path: str | Path, codes_path: str | Path, index_path: str | Path,
                   out_json: str | Path, table_csv: str | Path, table_md: str | Path, figure: str | Path,
                   audio_dir: str | Path, device: str = "auto", batch: int = 4) -> dict:
    import soundfile as sf


    dev = pick_device(device)
    model, info = load_codec(model_path)
    model = model.to(dev)
    payload = load_codes(codes_path)
    index_path = Path(index_path)
    index = read_json(index_path, "rerun the stems step")
    folder, chunk_len = index_path.parent / index["folder"], index["chunk_len"]
    if payload["bandwidth"] != info["bandwidth"] or payload.get("codec", {}).get("sha256") != info["sha256"]:
        raise UserError(f"{codes_path} was cached with another codec than {model_path}; rerun the cache_codes step")
    positions = [tuple(p) for p in payload["positions"].tolist()]
    if not positions:
        raise UserError(f"{codes_path} holds no chunks; the test split of the stems is empty")
    order = list(range(len(positions)))
    random.Random(cfg["seed"]).shuffle(order)
    picked = sorted(order[: cfg["max_chunks"] or len(order)])
    picked_set = set(picked)
    classes = list(payload["classes"])
    col = {c: index["classes"].index(c) for c in classes}
    # per subset: position id -> row in the subset's mix codes, for the picked chunks it keeps
    members = {name: {pid: k for k, pid in enumerate(s["items"].tolist()) if pid in picked_set}
               for name, s in payload["subsets"].items()}
    dist: dict[str, dict[int, float]] = {c: {} for c in classes}
    mix_dist: dict[str, dict[int, float]] = {name: {} for name in members}
    stats: dict[str, list[torch.Tensor]] = {}
    for start in progress(range(0, len(picked), batch), desc="codec test", unit="batch"):
        ids = picked[start:start + batch]
        audio = torch.from_numpy(np.stack([read_position(index, folder, positions[i]) for i in ids]))  # (B, C, n)
        for c in classes:
            with torch.no_grad():
                latent = codes_to_latent(model, payload["classes"][c][ids].to(dev))
            stats.setdefault(c, []).append(latent.float().cpu().flatten(1))
            d = ms_stft_distance(_decode(model, latent, chunk_len), audio[:, col[c]])
            dist[c].update(zip(ids, d.tolist()))
        for name, rows in members.items():
            sel = [(j, rows[i]) for j, i in enumerate(ids) if i in rows]
            if not sel:
                continue
            cls = payload["subsets"][name]["classes"]
            ref = audio[[j for j, _ in sel]][:, [col[c] for c in cls]].mean(1)
            with torch.no_grad():
                latent = codes_to_latent(model, payload["subsets"][name]["mix"][[k for _, k in sel]].to(dev))
            d = ms_stft_distance(_decode(model, latent, chunk_len), ref)
            mix_dist[name].update(zip([ids[j] for j, _ in sel], d.tolist()))
    rows = []
    for name, subset_rows in members.items():
        pids = list(subset_rows)
        for signal in payload["subsets"][name]["classes"] + ["mix"]:
            values = [mix_dist[name][p] for p in pids] if signal == "mix" else [dist[signal][p] for p in pids]
            rows.append({"subset": name, "signal": signal, "chunks": len(values),
                         "ms_stft_mean": float(np.mean(values)), "ms_stft_std": float(np.std(values))})
    latent_stats = {c: {"mean": float(torch.cat(v).mean()), "std": float(torch.cat(v).std())}
                    for c, v in stats.items()}
    result = {"codec": {k: info[k] for k in ("source", "origin", "sha256", "bandwidth", "n_q")},
              "split": payload["split"], "chunks": len(picked), "rows": rows, "latent_stats": latent_stats,
              "paper_ms_stft": paper_numbers("composable")["table1"]["ms_stft"]}
    _write_table(result, table_csv, table_md)
    examples = _examples(model, payload, index, folder, picked, cfg, dev)
    _plot(examples, figure, info)
    with atomic_dir(audio_dir) as tmp:
        for k, ex in enumerate(examples):
            for signal, (orig, dec, _) in ex["signals"].items():
                sf.write(tmp / f"ex{k}_{signal}_original.wav", orig, info["sample_rate"])
                sf.write(tmp / f"ex{k}_{signal}_codec.wav", dec, info["sample_rate"])
    write_json(out_json, result)
    log.info("codec %s: %s", info["source"], ", ".join(f"{r['subset']}/{r['signal']} {r['ms_stft_mean']:.2f}"
                                                       for r in rows))
    return result


def _write_table(result: dict, out_csv: str | Path, out_md: str | Path) -> None:
    c = result["codec"]
    label = "EnCodec 24 kHz, pretrained" if c["source"] == "pretrained" else "EnCodec architecture, trained here"
    header = ["codec", "bandwidth_kbps", "subset", "signal", "chunks", "ms_stft_mean", "ms_stft_std"]
    csv = [",".join(header)]
    md = ["| codec | kbps | subset | signal | test chunks | MS-STFT ↓ |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        csv.append(",".join(str(v) for v in (c["source"], c["bandwidth"], r["subset"], r["signal"], r["chunks"],
                                              r["ms_stft_mean"], r["ms_stft_std"])))
        md.append(f"| {label} | {c['bandwidth']:g} | {r['subset']} | {r['signal']} | {r['chunks']} | "
                  f"{r['ms_stft_mean']:.2f} ({r['ms_stft_std']:.2f}) |")
    paper = result["paper_ms_stft"]  # the paper's Table 1: pretrained EnCodec on the Slakh2100 test split
    csv.append(f"paper (reported),24.0,drums_bass (Slakh2100),mix,512,{paper},")
    md.append(f"| EnCodec 24 kHz, pretrained (paper, Slakh2100 test) | 24 | drums_bass | mix | 512 | {paper} |")
    write_text(out_csv, "\n".join(csv) + "\n")
    write_text(out_md, "Codec reconstruction on the test split: MS-STFT distance (RAVE form, windows 2048..128) "
               "between the decoded and the original 7-s chunks, mean (std) over chunks\n\n" + "\n".join(md) + "\n")


def _examples(model, payload, index, folder, picked, cfg, dev) -> list[dict]:
    """The first ``n_examples`` picked chunks of the first subset: per signal (original, decoded, latent)."""
    name = next(iter(payload["subsets"]))
    s = payload["subsets"][name]
    row_of = {int(pid): k for k, pid in enumerate(s["items"].tolist())}
    out = []
    for pid in [p for p in picked if p in row_of][: cfg["n_examples"]]:
        audio = read_position(index, folder, tuple(payload["positions"][pid].tolist()))
        signals = {}
        for c in s["classes"] + ["mix"]:
            codes = (payload["classes"][c][[pid]] if c != "mix" else s["mix"][[row_of[pid]]])
            orig = (audio[[index["classes"].index(m) for m in s["classes"]]].mean(0) if c == "mix"
                    else audio[index["classes"].index(c)])
            latent = codes_to_latent(model, codes.to(dev)).float().cpu()
            dec = latent_to_audio(model, latent.to(dev))[0, : len(orig)].float().cpu().numpy()
            signals[c] = (orig.astype(np.float32), dec.astype(np.float32), latent[0].numpy())
        out.append({"subset": name, "position": pid, "signals": signals})
    return out


def _plot(examples: list[dict], figure: str | Path, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def logspec(x: np.ndarray) -> np.ndarray:
        spec = torch.stft(torch.from_numpy(x), 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()
        return (20 * torch.log10(spec + 1e-5)).numpy()

    rows = [(k, sig) for k, ex in enumerate(examples) for sig in ex["signals"]]
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 2.2 * len(rows)), squeeze=False)
    for r, (k, sig) in enumerate(rows):
        orig, dec, latent = examples[k]["signals"][sig]
        for ax, img, title in ((axes[r, 0], logspec(orig), "original"), (axes[r, 1], logspec(dec), "decoded"),
                               (axes[r, 2], latent, "latent (128 x frames)")):
            spec = title != "latent (128 x frames)"
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma" if spec else "RdBu_r",
                      vmin=-80 if spec else None)
            ax.set_title(f"ex{k} {sig}: {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"codec {info['source']} at {info['bandwidth']:g} kbps: test examples", fontsize=9)
    fig.tight_layout()
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
