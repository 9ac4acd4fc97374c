"""Record baseline runs of Table 2 (supervised CNN, autoencoder / VAE): per seed the steps, throughput, best step,
validation curve and test accuracies, and Table 2's rows for them, as ``<prefix>_<device>.json`` and ``.md``
beside this script. ``results/`` is git-ignored, so this is how a measured baseline outlives the checkout.

    python benchmarks/baseline_record.py results/baselines/jsb_multi/cnn/seed* --prefix cnn_baseline_jsb_multi \\
        --note "snakemake --cores 2, params.yaml as is"

Each run folder needs ``train.json``, ``metrics.jsonl`` and ``probe.json`` (the pipeline's train-baseline and
probe steps).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchlib import write_record

from musicdecomp.errors import UserError
from musicdecomp.eval.tables import table2
from musicdecomp.io import read_json
from musicdecomp.train.ingest import read_metrics


def run_record(run_dir: Path) -> dict:
    summary = read_json(run_dir / "train.json", "train the run first")
    probe = read_json(run_dir / "probe.json", "probe the run first")
    rows = read_metrics(run_dir / "metrics.jsonl")
    val = [{"step": r["step"], **{k[4:]: round(v, 4) for k, v in r.items() if k.startswith("val/")}}
           for r in rows if "val/score" in r]
    return {"run_name": summary["run_name"], "seed": probe["seed"], "steps": summary["steps"],
            "best_step": summary["best_step"], "best_val_score": round(summary["best_val_score"], 4),
            "device": summary["device"], "steps_per_second": round(summary["steps_per_second"], 2),
            "training_wall_seconds": round(summary["wall_seconds"], 1),
            "test": {k: round(v, 4) for k, v in probe["test"].items()}, "test_examples": probe["examples"],
            "validation": val}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--prefix", required=True, help="the record is <prefix>_<device>.json and .md")
    p.add_argument("--note", default="", help="how the runs were made")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    try:
        runs = [run_record(r) for r in args.runs]
    except UserError as e:  # a file missing or damaged: one line naming it
        p.error(str(e))
    with tempfile.TemporaryDirectory() as tmp:
        rows = table2([r / "probe.json" for r in args.runs], Path(tmp, "t.csv"), Path(tmp, "t.md"))
        table_md = Path(tmp, "t.md").read_text()
    device = runs[0]["device"]
    record = {"device": device, "date": time.strftime("%Y-%m-%d"), "note": args.note,
              "table2_rows": rows, "runs": runs}
    out = write_record(args.out, args.prefix, device, record)
    out.with_suffix(".md").write_text(f"Measured on {device} ({record['date']}). {args.note}\n\n{table_md}")
    for r in runs:
        print(f"{r['run_name']}: best step {r['best_step']} of {r['steps']}, {r['steps_per_second']} steps/s, "
              f"test {r['test']}")
    print(table_md, f"-> {out}, {out.with_suffix('.md')}", sep="\n")


if __name__ == "__main__":
    main()
