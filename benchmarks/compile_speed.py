"""The training step of each model eager and under ``torch.compile``, side by side in one process on one device.

    python benchmarks/compile_speed.py [--models musicslots composable] [--budget 170] [--out benchmarks/]

Models: MusicSlots (``--masks``, ``--strides``; the real step of musicdecomp.train.loop: forward, power-domain
mixing, MSE, backward, clipping, fused Adam) and the composable-representations decomposition model (the mean
operator, N = 2, IADB loss, AdamW) at params.yaml's size and batch. Modes: eager float32 (the baseline of every
ratio), eager under autocast (``--amp``), and the same autocast with the model compiled as the ``compile`` speed
option compiles it (``musicdecomp.train.loop.compile_model``), in NCHW and channels-last (MusicSlots), and with
CUDA graphs. Per mode: steps/s, the speed-up over eager float32, the compile time (the first calls, less the
steps' own time), the FLOPs of one step (``torch.utils.flop_counter``, matrix products and convolutions) and the
fraction of the device's dense 16-bit peak (``--peak-tflops``) reached. A float32 check per model: the compiled
step's loss and gradient norm against the eager one's on the same batch. ``--budget`` stops starting new modes
after that many seconds (the record lists what it skipped); a mode that fails is recorded with its error.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from benchlib import device_name, write_record
from torch.utils.flop_counter import FlopCounterMode

from musicdecomp.config import load_params
from musicdecomp.device import autocast, pick_device
from musicdecomp.models.composable import build_model
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.composable import composable_loss
from musicdecomp.train.loop import Update

ROOT = Path(__file__).resolve().parents[1]
MODES = {  # name: (amp, compile, channels-last weights, CUDA graphs)
    "eager_fp32": ("none", False, False, False),
    "eager_amp": ("amp", False, False, False),
    "compiled_amp": ("amp", True, False, False),
    "compiled_amp_channels_last": ("amp", True, True, False),
    "compiled_amp_cudagraphs": ("amp", True, False, True),
}


def musicslots_case(mask: str, stride: int, batch: int, device: torch.device, small: bool):
    kw = dict(dim=16, enc_channels=16) if small else {}
    x = torch.rand(batch, 1, 128, 32, device=device, generator=torch.Generator(device).manual_seed(1)) * 80 - 90

    def build():
        torch.manual_seed(0)
        return MusicSlots(mask=mask, time_stride=stride, **kw).to(device)

    def loss(model):
        return torch.nn.functional.mse_loss(model(x)["recon"].float(), x)

    return build, loss, "adam", 1.0


def composable_case(batch: int, device: torch.device, small: bool):
    params = load_params([ROOT / "params.yaml", *([ROOT / "config/tiny.yaml"] if small else [])])
    mc = params["composable"]["model"]
    x = torch.randn(batch, 128, mc["crop_frames"], device=device, generator=torch.Generator(device).manual_seed(1))

    def build():
        torch.manual_seed(0)
        return build_model(mc, "mean", 2).to(device)

    def loss(model):
        return composable_loss(model, x, None, "d", torch.Generator(device).manual_seed(2))

    return build, loss, "adamw", None


def make_step(case, amp: str, device: torch.device, compiled: bool, channels_last: bool, cudagraphs: bool):
    """A fresh model (seed 0) and its training step as a function returning (loss, grad norm)."""
    build, loss, optimizer, clip = case
    model = build()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compiled:
        options = {"layout_optimization": False, "triton.cudagraphs": cudagraphs}
        model.compile(options=options)
    opt_cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    update = Update(model, opt, device, amp, clip)

    def step():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, amp):
            value = loss(model)
        return value.detach(), update(value)

    return step


def step_flops(case, device: torch.device) -> int:
    build, loss, _, _ = case
    model = build()
    with FlopCounterMode(display=False) as counter:
        loss(model).backward()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(case, amp, device, mode, steps) -> dict:
    _, compiled, channels_last, cudagraphs = MODES[mode]
    step = make_step(case, amp, device, compiled, channels_last, cudagraphs)
    t0 = time.perf_counter()
    for _ in range(3):  # compilation (and CUDA-graph recording) happens here
        step()
    sync(device)
    first = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    per_step = (time.perf_counter() - t) / steps
    return {"steps_per_second": 1.0 / per_step, "compile_seconds": max(0.0, first - 3 * per_step)}


def agreement(case, device: torch.device) -> dict:
    """Loss and gradient norm of one float32 step, eager against compiled, from the same weights and batch."""
    (l0, g0), (l1, g1) = (tuple(float(v) for v in make_step(case, "none", device, c, False, False)())
                          for c in (False, True))
    return {"loss_rel_diff": abs(l1 - l0) / abs(l0), "grad_norm_rel_diff": abs(g1 - g0) / abs(g0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["musicslots", "composable"], choices=["musicslots", "composable"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--amp", default="bf16", choices=["fp16", "bf16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--masks", nargs="+", default=["none"], choices=["none", "sigmoid", "softmax"])
    p.add_argument("--strides", nargs="+", type=int, default=[2], choices=[1, 2])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--peak-tflops", type=float, default=989.5,
                   help="dense 16-bit matrix peak of the device (H100/H200 SXM datasheet)")
    p.add_argument("--budget", type=float, default=0, help="seconds after which no new mode is started (0: none)")
    p.add_argument("--small", action="store_true", help="small models (a quick check on CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    start = time.perf_counter()
    device = pick_device(args.device)
    name = device_name(device)
    params = load_params([ROOT / "params.yaml"])
    cases = {}
    if "musicslots" in args.models:
        for mask in args.masks:
            for stride in args.strides:
                cases[f"musicslots {mask}-t{stride}"] = musicslots_case(
                    mask, stride, params["musicslots"]["train"]["batch_size"], device, args.small)
    if "composable" in args.models:
        cases["composable mean N=2"] = composable_case(
            4 if args.small else params["composable"]["train"]["batch_size"], device, args.small)
    results, skipped, checks = [], [], {}
    for label, case in cases.items():
        flops, base = step_flops(case, device), None
        for mode in args.modes:
            if args.budget and time.perf_counter() - start > args.budget:
                skipped.append(f"{label}: {mode}")
                continue
            if (MODES[mode][2] and label.startswith("composable")) or (MODES[mode][3] and device.type != "cuda"):
                continue  # channels-last is for 2-D convolutions; CUDA graphs for CUDA
            amp = args.amp if MODES[mode][0] == "amp" else "none"
            torch._dynamo.reset()
            try:
                r = time_mode(case, amp, device, mode, args.steps)
            except Exception as e:  # a compiler failure is a result too: record it and go on
                results.append({"model": label, "mode": mode, "error": f"{type(e).__name__}: "
                                                                        f"{str(e).splitlines()[0][:300]}"})
                print(f"{label:24s} {mode:28s} FAILED: {results[-1]['error']}", flush=True)
                continue
            base = r["steps_per_second"] if mode == "eager_fp32" else base
            tflops = flops * r["steps_per_second"] / 1e12
            row = {"model": label, "mode": mode, "amp": amp, "steps_per_second": round(r["steps_per_second"], 2),
                   "speedup_over_eager_fp32": round(r["steps_per_second"] / base, 3) if base else None,
                   "compile_seconds": round(r["compile_seconds"], 1), "gflops_per_step": round(flops / 1e9, 2),
                   "achieved_tflops": round(tflops, 2), "fraction_of_peak": round(tflops / args.peak_tflops, 4)}
            results.append(row)
            print(f"{label:24s} {mode:28s} {row['steps_per_second']:8.2f} steps/s  x{row['speedup_over_eager_fp32']}"
                  f"  compile {row['compile_seconds']} s", flush=True)
        if not args.budget or time.perf_counter() - start < args.budget:
            torch._dynamo.reset()
            checks[label] = agreement(case, device)
            print(f"{label}: compiled vs eager, float32: {checks[label]}", flush=True)
    record = {"device": name, "torch": torch.__version__, "amp": args.amp, "steps_timed": args.steps,
              "small": args.small, "peak_tflops": args.peak_tflops, "results": results, "agreement_fp32": checks,
              "skipped_for_budget": skipped, "date": time.strftime("%Y-%m-%d")}
    prefix = "compile_speed" + ("_small" if args.small else "")
    print(f"-> {write_record(args.out, prefix, name, record)}")


if __name__ == "__main__":
    main()
