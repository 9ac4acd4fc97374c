"""How far MusicSlots' slots move under each training precision, against float32: the case for amp: fp16.

    python benchmarks/musicslots_precision.py [--stride 2] [--q-scales 1 3 10] [--device auto] [--out benchmarks/]

A fresh paper-size model (official attention) on the first ``--chords`` test chords of JSB-multi, run under autocast
with bf16 and with fp16 (as training does on CUDA, and here on CPU too; on CUDA also float32 with TF32 convolutions,
PyTorch's default) and compared with float32 (TF32 off): the relative error (Frobenius norm of the difference over
the norm of the reference) of the encoder's tokens, of the last iteration's attention, of the slots and of the
decoded per-slot dB maps. The official attention has no 1/sqrt(D) in its softmax, so a trained model's logits grow
large, and the rounding of a logit is relative to its size; ``--q-scales`` multiplies the query projection to
emulate that sharper attention (the mean |logit| is recorded). The slot noise is drawn in float32 whatever the
precision, so the runs start from the same slots.

A fresh model, not a trained one, so the errors say how precise each format is here, not what a trained model
loses. CPU's autocast keeps more operations in low precision than CUDA's (LayerNorm, for one), so on CPU the errors
of both formats are upper bounds; their ratio is the point.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from benchlib import device_name, write_record

from musicdecomp.data.datasets import load_split
from musicdecomp.device import AMP, pick_device
from musicdecomp.models.musicslots import MusicSlots


@contextlib.contextmanager
def exact_float32():
    """No TF32 in matrix products and convolutions (the reference)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def outputs(model: MusicSlots, x: torch.Tensor, amp: str) -> dict[str, torch.Tensor]:
    with torch.autocast(x.device.type, dtype=AMP.get(amp), enabled=amp in AMP):  # on CPU too, unlike training
        tokens = model.encoder(x)
        out = model(x, generator=torch.Generator(device=x.device).manual_seed(1))
    return {"tokens": tokens.float(), "attention": out["attn"].float(), "slots": out["slots"].float(),
            "slot_db": out["slot_values"].float()}


def relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).norm() / ref.norm())


@torch.no_grad()
def mean_abs_logit(model: MusicSlots, x: torch.Tensor) -> float:
    """Mean |q.k| of the first iteration in float32 (from the slots' mean initialisation)."""
    sa = model.slot_attention
    inputs = sa.norm_inputs(model.to_slot_dim(model.encoder(x)))
    q = sa.to_q(sa.norm_slots(sa.mu.expand(x.shape[0], -1, -1)))
    return float(torch.einsum("bkd,bnd->bkn", q, sa.to_k(inputs)).abs().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="results/data/jsb_multi", help="dataset folder holding test.pt")
    p.add_argument("--chords", type=int, default=32)
    p.add_argument("--stride", type=int, default=2, choices=[1, 2])
    p.add_argument("--attention", default="official", choices=["official", "standard"])
    p.add_argument("--q-scales", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    x = load_split(Path(args.data) / "test.pt", device).chord_db[:args.chords]
    model = MusicSlots(time_stride=args.stride, attention=args.attention).to(device).eval()
    precisions = ["bf16", "fp16"] + (["none"] if device.type == "cuda" else [])  # none on CUDA: TF32
    rows, t0 = [], time.perf_counter()
    for scale in args.q_scales:
        with torch.no_grad():
            model.slot_attention.to_q.weight.mul_(scale)
        with exact_float32():
            ref = outputs(model, x, "none")
            logit = mean_abs_logit(model, x)
        for amp in precisions:
            got = outputs(model, x, amp)
            row = {"q_scale": scale, "mean_abs_logit": round(logit, 2), "precision": amp if amp != "none" else
                   "float32 (TF32)", **{k: round(relative(got[k], ref[k]), 5) for k in ref}}
            rows.append(row)
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        with torch.no_grad():
            model.slot_attention.to_q.weight.div_(scale)
    name = device_name(device)
    record = {"what": __doc__.splitlines()[0], "device": name, "torch": torch.__version__,
              "model": f"paper size, fresh (seed 0), {args.attention} attention, time stride {args.stride}",
              "chords": f"first {len(x)} of {args.data}/test.pt", "reference": "float32, TF32 off",
              "error": "relative Frobenius norm of the difference", "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    print(f"-> {write_record(args.out, 'musicslots_precision', name, record)}")


if __name__ == "__main__":
    main()
