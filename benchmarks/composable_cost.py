"""What the composable-representations steps cost at default size (params.yaml) on the current device.

    python benchmarks/composable_cost.py [--device cpu] [--steps 2] [--out benchmarks/]

Times, with random latents of the default shape (128 x crop_frames) and synthetic audio, each unit of work the
steps repeat: one training step of the decomposition model (mean operator) and of the supervised separator at the
default batch (forward, IADB loss, backward, AdamW), one sampling step of the decomposition model at the default
evaluation batch (N components + the composed mixture: N + 1 U-Net passes), one training step of the recomposition
prior, the FAD embedding of one chunk, and one chunk of each classic separator. The record extrapolates each step's total from its counts: training steps (epochs x chunks // batch),
sampling passes (chunks x sample steps), baseline chunks. ``--chunks`` is the subset's training chunk count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import device_name, timed, write_record

from musicdecomp.config import load_params
from musicdecomp.device import autocast, pick_device
from musicdecomp.metrics.embeddings import get_embedding
from musicdecomp.models.composable import build_model
from musicdecomp.models.prior import sample_masks
from musicdecomp.train.composable import composable_loss
from musicdecomp.train.prior import prior_from_config

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=2, help="repeats of each timed unit")
    p.add_argument("--chunks", type=int, default=2240, help="training chunks of the subset (drums_bass)")
    p.add_argument("--amp", default=None, help="override composable.train.amp")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    params = load_params([ROOT / "params.yaml"])
    c = params["composable"]
    dev = pick_device(args.device)
    amp = args.amp or c["train"]["amp"]
    crop, n = c["model"]["crop_frames"], 2
    results = {}
    for variant in ("mean", "supervised"):
        torch.manual_seed(0)
        model = build_model(c["model"], variant, n).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator(device=dev).manual_seed(0)
        b = c["train"]["batch_size"]
        mix = torch.randn(b, 128, crop, device=dev)
        sources = torch.randn(b, n, 128, crop, device=dev) if variant == "supervised" else None

        def step():
            with autocast(dev, amp):
                loss = composable_loss(model, mix, sources, c["train"]["iadb_variant"], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        results[f"train_step_{variant}_s"] = timed(step, args.steps, dev)
        print(f"train step ({variant}, batch {b}): {results[f'train_step_{variant}_s']:.2f} s", flush=True)
    prior = prior_from_config(c["prior"], n).to(dev)
    popt = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    pgen = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(c["prior"]["train"]["batch_size"], n, 1, crop, device=dev)

    def prior_step():
        masks = sample_masks(len(z), n, c["prior"]["p_masks"][0], pgen, device=dev)
        with autocast(dev, amp):
            loss = prior.loss(z, masks, pgen)
        popt.zero_grad(set_to_none=True)
        loss.backward()
        popt.step()

    results["train_step_prior_s"] = timed(prior_step, args.steps, dev)
    print(f"train step (prior, batch {len(z)}): {results['train_step_prior_s']:.2f} s", flush=True)
    embed = get_embedding(c["prior"]["eval"]["embedding"], device=dev)
    clip = np.random.default_rng(0).standard_normal(crop * 320).astype(np.float32) * 0.1
    t0 = time.perf_counter()
    embed(clip, 24000)
    results["embedding_s_per_clip"] = time.perf_counter() - t0
    print(f"{c['prior']['eval']['embedding']} embedding: {results['embedding_s_per_clip']:.2f} s per clip", flush=True)
    model = build_model(c["model"], "mean", n).to(dev).eval()
    eb = c["eval"]["batch_size"]
    x = torch.randn(eb, 128, crop, device=dev)

    @torch.no_grad()
    def sample_step():
        z = model.encode(x)
        for i in range(n):
            model(x, torch.rand(eb, device=dev), z, component=i)
        model(x, torch.rand(eb, device=dev), z)

    per = timed(sample_step, args.steps, dev) / eb
    results["sample_step_per_chunk_s"] = per
    print(f"sampling step per chunk (N={n}, {n + 1} passes): {per:.3f} s", flush=True)
    try:
        from musicdecomp.eval.separators import oracle_irm, separate
    except ImportError as e:  # a GPU machine without librosa or scikit-learn: the models' costs only
        print(f"baselines not timed: {e}", flush=True)
        methods = []
    else:
        methods = c["baselines"]["methods"] + ["oracle_irm"]
    rng = np.random.default_rng(0)
    sr, samples = 24000, crop * 320
    t = np.arange(samples) / sr
    stems = np.stack([rng.standard_normal(samples) * (rng.random(samples) < 0.05), np.sin(2 * np.pi * 55 * t)])
    mixture = stems.mean(0)
    for m in methods:
        t0 = time.perf_counter()
        if m == "oracle_irm":
            oracle_irm(mixture, stems, sr)
        else:
            separate(m, mixture, n, sr, **({"n_components": c["baselines"]["nmf_components"]} if m == "nmf" else {}))
        results[f"baseline_{m}_s_per_chunk"] = time.perf_counter() - t0
        print(f"{m}: {results[f'baseline_{m}_s_per_chunk']:.2f} s per chunk", flush=True)
    steps = c["train"]["epochs"] * (args.chunks // c["train"]["batch_size"])
    chunks = c["eval"]["max_chunks"]
    totals = {
        "train_composable_hours_per_run": steps * results["train_step_mean_s"] / 3600,
        "train_supervised_hours": steps * results["train_step_supervised_s"] / 3600,
        "train_prior_hours_per_run": steps * results["train_step_prior_s"] / 3600,
        "eval_composable_hours_per_run": chunks * c["eval"]["sample_steps"] * per / 3600,
        "eval_bss_baselines_hours_per_subset": chunks * sum(v for k, v in results.items()
                                                            if k.startswith("baseline_")) / 3600}
    for k, v in totals.items():
        print(f"{k}: {v:.2f}", flush=True)
    record = {"device": device_name(dev), "torch": torch.__version__, "amp": amp if dev.type == "cuda" else "none",
              "threads": torch.get_num_threads(), "train_chunks": args.chunks, "train_steps": steps,
              "eval_chunks": chunks, "sample_steps": c["eval"]["sample_steps"], "units": results,
              "totals": totals, "date": time.strftime("%Y-%m-%d")}
    print(f"-> {write_record(args.out, 'composable_cost', device_name(dev), record)}")


if __name__ == "__main__":
    main()
