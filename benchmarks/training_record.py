"""Record MusicSlots training runs made on a GPU (run folders brought back by
tools/gpu/driver.py unpack): steps reached, throughput, validation curve and test metrics per run,
as ``musicslots_training_<device>.json`` and a figure of the validation curves, ``.png``, beside this script
(``--prefix`` names another record, e.g. a run continued on a second GPU kind, so that the earlier one stays).

    python benchmarks/training_record.py results/gpu_runs/none-t1-imp_true-k7 results/gpu_runs/softmax-... \\
        --note "two runs side by side on one GPU"
    python benchmarks/training_record.py checkpoints/musicslots/none-t2-imp_true-k7 --prefix ... \\
        --baseline benchmarks/musicslots_training_t2_official_nvidia_h200.json   # its curves too, dashed

Each run records its training precision (``amp``) and attention; records made before that field existed were
all trained in bf16 (the default until 2026-11-27), and the figure labels them so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchlib import write_record

from musicdecomp.train.ingest import read_metrics

PAPER = {"note_mse": 13.47, "miou": 0.91}  # MusicSlots, JSB multi-instrument, best variant


OLD_AMP = "bf16"  # the training precision of records that do not name it


def run_record(run_dir: Path) -> dict:
    progress = json.loads((run_dir / "progress.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    test = json.loads((run_dir / "test.json").read_text())
    rows = read_metrics(run_dir / "metrics.jsonl")
    val = [{"step": r["step"], "miou": round(r["val/miou"], 4), "note_mse": round(r["val/note_mse"], 2)}
           for r in rows if "val/miou" in r]
    return {"run_name": progress["run_name"], "steps": progress["step"], "of_steps": progress["steps"],
            "steps_per_second_last_call": round(progress["steps_per_second"], 2),
            "training_wall_seconds": round(progress["wall_seconds"], 1), "device": progress["device"],
            "amp": cfg["train"]["amp"], "attention": cfg["model"].get("attention", "standard"),
            "speed_options_last_call": sorted(k for k, on in progress.get("speed", {}).items() if on),
            **({"seconds_last_call": {k: round(v, 1) for k, v in progress["seconds_this_call"].items()}}
               if "seconds_this_call" in progress else {}),  # all, validation, checkpoints
            "best_step": test["best_step"], "test": {k: round(test["test"][k], 4) for k in ("note_mse", "miou")},
            "validation": val}


def label(rec: dict) -> str:
    return f"{rec['run_name'].split('/')[1]} ({rec.get('amp', OLD_AMP)})"


def plot(records: list[dict], out_png: Path, baseline: list[dict] = ()) -> None:
    """Validation curves of ``records``, and of ``baseline`` (runs of an earlier record) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for rec, style in [(r, {"marker": "."}) for r in records] + [(r, {"linestyle": ":"}) for r in baseline]:
        steps = [v["step"] for v in rec["validation"]]
        name = label(rec) + (f", {rec['device']}, earlier" if style.get("linestyle") else "")
        axes[0].plot(steps, [v["miou"] for v in rec["validation"]], label=name, **style)
        axes[1].plot(steps, [v["note_mse"] for v in rec["validation"]], label=name, **style)
    for ax, key, title in ((axes[0], "miou", "validation mIoU"), (axes[1], "note_mse", "validation note MSE (dB²)")):
        ax.axhline(PAPER[key], color="gray", linestyle="--", linewidth=1, label=f"paper {PAPER[key]}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"MusicSlots on JSB-multi (last call on {records[0]['device']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--note", default="", help="how the runs were made (e.g. side by side, the parameter files)")
    p.add_argument("--out", default=str(Path(__file__).parent))
    p.add_argument("--prefix", default="musicslots_training", help="the record is <prefix>_<device of the last call>")
    p.add_argument("--baseline", type=Path, nargs="*", default=[],
                   help="earlier records (JSON) whose runs the figure shows too, dashed, to compare at equal steps")
    args = p.parse_args()
    records = [run_record(r) for r in args.runs]
    baseline = [run for path in args.baseline for run in json.loads(path.read_text())["runs"]]
    device = records[0]["device"]
    record = {"device": device, "date": time.strftime("%Y-%m-%d"), "note": args.note, "paper": PAPER,
              "runs": records, **({"baseline": [str(b) for b in args.baseline]} if args.baseline else {})}
    out = write_record(args.out, args.prefix, device, record)
    plot(records, out.with_suffix(".png"), baseline)
    for rec in records:
        print(f"{rec['run_name']}: step {rec['steps']}, {rec['steps_per_second_last_call']} steps/s, test note MSE "
              f"{rec['test']['note_mse']}, mIoU {rec['test']['miou']} (best step {rec['best_step']})")
    print(f"-> {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
