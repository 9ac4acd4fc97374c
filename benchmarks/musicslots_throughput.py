"""Training throughput of MusicSlots (steps/s at batch 32) on the current device, for each mask type and
time stride, with the paper-size model. Writes a JSON record named after the device into benchmarks/.

    python benchmarks/musicslots_throughput.py [--steps 30] [--amp fp16] [--out benchmarks/]
    python benchmarks/musicslots_throughput.py --masks none --strides 1 --speed   # the speed options too

Synthetic dB chords (the speed does not depend on the data); the timed loop is the real training step
(forward, power-domain mixing, MSE, backward, clipping, Adam; fused Adam on CUDA) under the same autocast as
training (``--amp fp16`` with its loss scaling, musicdecomp.train.loop.Update). ``--speed`` also times every
combination of the training's speed options (``--channels-last``, ``--cudnn-benchmark``; musicdecomp.train.loop)
and records the fastest per model as ``best_speed``.
``--profile`` adds the device's top kernels for the first model (torch.profiler) to the record.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from benchlib import device_name, timed, write_record

from musicdecomp.device import autocast, pick_device
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.loop import Update


def make_step(mask: str, stride: int, batch: int, amp: str, device: torch.device, channels_last: bool = False,
              **model_kw):
    """One training step of a fresh model, as a function (same as musicdecomp.train.loop)."""
    torch.manual_seed(0)
    model = MusicSlots(mask=mask, time_stride=stride, **model_kw).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    update = Update(model, opt, device, amp, 1.0)
    x = torch.rand(batch, 1, 128, 32, device=device) * 80 - 90

    def step():
        with autocast(device, amp):
            out = model(x)
        update(torch.nn.functional.mse_loss(out["recon"].float(), x))

    return step


def bench(mask: str, stride: int, steps: int, batch: int, amp: str, device: torch.device,
          channels_last: bool = False, cudnn_benchmark: bool = False, **model_kw) -> float:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
    step = make_step(mask, stride, batch, amp, device, channels_last, **model_kw)
    return 1.0 / timed(step, steps, device, warmup=3)


def profile(step, device: torch.device, steps: int = 10, rows: int = 25) -> list[dict]:
    """The kernels (or CPU ops) that take the most time over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)[:rows]
    return [{"name": e.key[:120], "ms_per_step": round(getattr(e, attr) / 1000 / steps, 4),
             "calls_per_step": e.count / steps} for e in events]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--amp", default="fp16", choices=["fp16", "bf16", "none"])
    p.add_argument("--device", default="auto")
    p.add_argument("--masks", nargs="+", default=["none", "sigmoid", "softmax"],
                   choices=["none", "sigmoid", "softmax"])
    p.add_argument("--strides", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    p.add_argument("--speed", action="store_true", help="also time the speed options (channels_last, "
                                                        "cudnn_benchmark), every combination")
    p.add_argument("--profile", action="store_true", help="record the top kernels of the first model")
    p.add_argument("--small", action="store_true", help="a 16-channel model (a quick check on CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    device = pick_device(args.device)
    name = device_name(device)
    kw = dict(dim=16, enc_channels=16) if args.small else {}
    cudnn = [False, True] if device.type == "cuda" else [False]  # cuDNN options mean nothing elsewhere
    options = list(itertools.product([False, True], cudnn)) if args.speed else [(False, False)]
    results, best = [], []
    for mask in args.masks:
        for stride in args.strides:
            timings = []
            for channels_last, cudnn_benchmark in options:
                sps = bench(mask, stride, args.steps, args.batch, args.amp, device, channels_last, cudnn_benchmark,
                            **kw)
                speed = {"channels_last": channels_last, "cudnn_benchmark": cudnn_benchmark}
                timings.append((sps, speed))
                results.append({"mask": mask, "time_stride": stride, **speed, "steps_per_second": round(sps, 3),
                                "hours_per_100k_steps": round(1e5 / sps / 3600, 2)})
                flags = ", ".join(k for k, v in speed.items() if v) or "defaults"
                print(f"{mask:8s} stride {stride} ({flags}): {sps:8.2f} steps/s  ({1e5 / sps / 3600:.2f} h per "
                      f"100k steps)", flush=True)
            sps, speed = max(timings, key=lambda t: t[0])
            best.append({"mask": mask, "time_stride": stride, "speed": speed, "steps_per_second": round(sps, 3),
                         "speedup": round(sps / timings[0][0], 3)})
    record = {"device": name, "torch": torch.__version__, "batch": args.batch, "amp": args.amp,
              "model": "small" if args.small else "paper (3.5 M parameters)", "results": results,
              "date": time.strftime("%Y-%m-%d")}
    if args.speed:
        record["best_speed"] = best
    if args.profile:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
        record["profile"] = {"mask": args.masks[0], "time_stride": args.strides[0],
                             "top": profile(make_step(args.masks[0], args.strides[0], args.batch, args.amp, device,
                                                      **kw), device)}
    prefix = "musicslots_throughput" + ("_small" if args.small else "") + ("_speed" if args.speed else "")
    print(f"-> {write_record(args.out, prefix, name, record)}")


if __name__ == "__main__":
    main()
