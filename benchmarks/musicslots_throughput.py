"""Training throughput of MusicSlots (steps/s at batch 32) on the current device, for each mask type and
time stride, with the paper-size model. Writes a JSON record named after the device into benchmarks/.

    python benchmarks/musicslots_throughput.py [--steps 30] [--amp bf16] [--out benchmarks/]

Synthetic dB chords (the speed does not depend on the data); the timed loop is the real training step
(forward, power-domain mixing, MSE, backward, clipping, Adam) under the same autocast as training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.loop import autocast, pick_device

from benchlib import device_name, timed, write_record


def bench(mask: str, stride: int, steps: int, batch: int, amp: str, device: torch.device, **model_kw) -> float:
    torch.manual_seed(0)
    model = MusicSlots(mask=mask, time_stride=stride, **model_kw).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    x = torch.rand(batch, 1, 128, 32, device=device) * 80 - 90

    def step():
        with autocast(device, amp):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out["recon"].float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return 1.0 / timed(step, steps, device, warmup=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true", help="a 16-channel model (a quick check on CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    device = pick_device(args.device)
    name = device_name(device)
    kw = dict(dim=16, enc_channels=16) if args.small else {}
    results = []
    for mask in ("none", "sigmoid", "softmax"):
        for stride in (1, 2):
            sps = bench(mask, stride, args.steps, args.batch, args.amp, device, **kw)
            results.append({"mask": mask, "time_stride": stride, "steps_per_second": round(sps, 3),
                            "hours_per_100k_steps": round(1e5 / sps / 3600, 2)})
            print(f"{mask:8s} stride {stride}: {sps:8.2f} steps/s  ({1e5 / sps / 3600:.2f} h per 100k steps)")
    record = {"device": name, "torch": torch.__version__, "batch": args.batch, "amp": args.amp,
              "model": "small" if args.small else "paper (3.5 M parameters)", "results": results,
              "date": time.strftime("%Y-%m-%d")}
    print(f"-> {write_record(args.out, 'musicslots_throughput' + ('_small' if args.small else ''), name, record)}")


if __name__ == "__main__":
    main()
