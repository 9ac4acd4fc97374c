"""Record MusicSlots training runs made on a GPU (run folders brought back by
workflow/scripts/musicslots_gpu.py unpack): steps reached, throughput, validation curve and test metrics per run,
as ``musicslots_training_<device>.json`` and a figure of the validation curves, ``.png``, beside this script
(``--prefix`` names another record, e.g. a run continued on a second GPU kind, so that the earlier one stays).

    python benchmarks/training_record.py results/gpu_runs/none-t1-imp_true-k7 results/gpu_runs/softmax-... \\
        --note "two runs side by side on one GPU"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchlib import write_record

PAPER = {"note_mse": 13.47, "miou": 0.91}  # MusicSlots, JSB multi-instrument, best variant


def run_record(run_dir: Path) -> dict:
    progress = json.loads((run_dir / "progress.json").read_text())
    test = json.loads((run_dir / "test.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    val = [{"step": r["step"], "miou": round(r["val/miou"], 4), "note_mse": round(r["val/note_mse"], 2)}
           for r in rows if "val/miou" in r]
    return {"run_name": progress["run_name"], "steps": progress["step"], "of_steps": progress["steps"],
            "steps_per_second_last_call": round(progress["steps_per_second"], 2),
            "training_wall_seconds": round(progress["wall_seconds"], 1), "device": progress["device"],
            "speed_options_last_call": sorted(k for k, on in progress.get("speed", {}).items() if on),
            **({"seconds_last_call": {k: round(v, 1) for k, v in progress["seconds_this_call"].items()}}
               if "seconds_this_call" in progress else {}),  # all, validation, checkpoints
            "best_step": test["best_step"], "test": {k: round(test["test"][k], 4) for k in ("note_mse", "miou")},
            "validation": val}


def plot(records: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for rec in records:
        steps = [v["step"] for v in rec["validation"]]
        label = rec["run_name"].split("/")[1]
        axes[0].plot(steps, [v["miou"] for v in rec["validation"]], marker=".", label=label)
        axes[1].plot(steps, [v["note_mse"] for v in rec["validation"]], marker=".", label=label)
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
    args = p.parse_args()
    records = [run_record(r) for r in args.runs]
    device = records[0]["device"]
    record = {"device": device, "date": time.strftime("%Y-%m-%d"), "note": args.note, "paper": PAPER,
              "runs": records}
    out = write_record(args.out, args.prefix, device, record)
    plot(records, out.with_suffix(".png"))
    for rec in records:
        print(f"{rec['run_name']}: step {rec['steps']}, {rec['steps_per_second_last_call']} steps/s, test note MSE "
              f"{rec['test']['note_mse']}, mIoU {rec['test']['miou']} (best step {rec['best_step']})")
    print(f"-> {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
