"""Result tables generated from the evaluation outputs (never typed in): CSV and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from musicdecomp.errors import UserError
from musicdecomp.io import write_text

# The only published numbers at hand (an unverified summary of the paper: "note MSE 13.47 and mIoU 0.91 on
# Bach Chorales" for the best variant); shown beside ours, labelled as such.
PAPER_TABLE1 = {"note_mse": 13.47, "miou": 0.91}


def _fmt(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table1(eval_jsons: list[str | Path], out_csv: str | Path, out_md: str | Path) -> list[dict]:
    """Table 1: test note MSE and mIoU, mean ± std over seeds, one row per (dataset, variant)."""
    missing = [str(p) for p in eval_jsons if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} evaluation(s) of the sweep are missing, e.g. {missing[0]}; "
                        f"run the eval step for them (snakemake builds them with the table)")
    runs = [json.loads(Path(p).read_text()) for p in eval_jsons]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["variant"]), []).append(r)
    rows = []
    for (dataset, variant), rs in sorted(groups.items()):
        m = rs[0]["model"]
        mse = [r["test"]["note_mse"] for r in rs]
        iou = [r["test"]["miou"] for r in rs]
        rows.append({"dataset": dataset, "variant": variant, "mask": m["mask"], "time_stride": m["time_stride"],
                     "implicit": m["implicit"], "num_slots": m["num_slots"], "seeds": len(rs),
                     "note_mse_mean": float(np.mean(mse)), "note_mse_std": float(np.std(mse, ddof=1)) if len(rs) > 1 else 0.0,
                     "miou_mean": float(np.mean(iou)), "miou_std": float(np.std(iou, ddof=1)) if len(rs) > 1 else 0.0,
                     "best_steps": sorted({r["best_step"] for r in rs}), "_mse": mse, "_iou": iou})
    header = ["dataset", "variant", "mask", "time_stride", "implicit", "num_slots", "seeds",
              "note_mse_mean", "note_mse_std", "miou_mean", "miou_std"]
    csv = [",".join(header)]
    for r in rows:
        csv.append(",".join(str(r[h]) for h in header))
    csv.append(f"paper (reported; unverified),best,,,,7,,{PAPER_TABLE1['note_mse']},,{PAPER_TABLE1['miou']},")
    write_text(out_csv, "\n".join(csv) + "\n")
    md = ["| dataset | mask | time stride | implicit | slots | seeds | note MSE (dB²) ↓ | mIoU ↑ |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['dataset']} | {r['mask']} | {r['time_stride']} | {'yes' if r['implicit'] else 'no'} | "
                  f"{r['num_slots']} | {r['seeds']} | {_fmt(r['_mse'], 2)} | {_fmt(r['_iou'], 3)} |")
    md.append(f"| paper (JSB, best variant; reported, unverified) | | | | 7 | | {PAPER_TABLE1['note_mse']:.2f} | "
              f"{PAPER_TABLE1['miou']:.2f} |")
    write_text(out_md, "Table 1: unsupervised note discovery on the test split (mean ± std over seeds)\n\n"
               + "\n".join(md) + "\n")
    for r in rows:
        del r["_mse"], r["_iou"]
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def table2(probe_jsons: list[str | Path], out_csv: str | Path, out_md: str | Path) -> list[dict]:
    """Table 2: chord-level exact-match accuracies (pitch, instrument, both) on the test split, mean ± std
    over seeds: MusicSlots (linear probes on matched slots), AE / VAE (linear probe on the latent), CNN."""
    missing = [str(p) for p in probe_jsons if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} probe result(s) are missing, e.g. {missing[0]}; run their probe step")
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in (json.loads(Path(p).read_text()) for p in probe_jsons):
        groups.setdefault((r["dataset"], r["model"], r["name"]), []).append(r)
    order = {"musicslots": 0, "vae": 1, "cnn": 2}
    rows = []
    for (dataset, model, name), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        row = {"dataset": dataset, "model": model, "name": name, "seeds": len(rs)}
        for key in ("pitch", "instrument", "chord"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([100.0 * r["test"][key] for r in rs])
        row["label"] = {"musicslots": f"MusicSlots ({name}), linear probe on slots",
                        "cnn": "supervised CNN"}.get(model) or (
            "autoencoder, linear probe" if rs[0]["kld_weight"] == 0 else
            f"VAE (KL weight {rs[0]['kld_weight']:g}), linear probe")
        rows.append(row)
    header = ["dataset", "model", "name", "seeds", "pitch_mean", "pitch_std", "instrument_mean", "instrument_std",
              "chord_mean", "chord_std"]
    write_text(out_csv, "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n")
    md = ["| dataset | model | seeds | pitch acc. (%) ↑ | instrument acc. (%) ↑ | chord acc. (%) ↑ |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.1f} ± {r[f'{k}_std']:.1f}" if r["seeds"] > 1 else f"{r[f'{k}_mean']:.1f}"
                 for k in ("pitch", "instrument", "chord")]
        md.append(f"| {r['dataset']} | {r['label']} | {r['seeds']} | " + " | ".join(cells) + " |")
    write_text(out_md, "Table 2: note property prediction on the test split, chord-level exact match "
               "(mean ± std over seeds)\n\n" + "\n".join(md) + "\n")
    return rows
