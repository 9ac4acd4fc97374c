"""The MusicSlots training step eager and under ``torch.compile``, side by side in one process on one device.

    python benchmarks/musicslots_compile.py [--masks none softmax] [--strides 2] [--budget 170] [--out benchmarks/]

For each model (mask, time stride) it times the real training step (forward, power-domain mixing, MSE, backward,
clipping, fused Adam; benchmarks/musicslots_throughput.make_step) in these modes: eager float32 (the baseline of
every ratio), eager under the training's autocast (``--amp``, fp16 by default), and the same autocast with the
model compiled by ``torch.compile`` in its default mode and in ``reduce-overhead`` (CUDA graphs). Per mode it
records steps/s, the speed-up over eager float32, the compile time (the first calls, until the step runs at
speed) and, from ``torch.utils.flop_counter``, the FLOPs of one step and the fraction of the device's dense
16-bit matrix peak (``--peak-tflops``) that the step reaches. It also checks that the compiled float32 step
computes what the eager one computes (loss and gradient norm on the same batch).
``--budget`` stops starting new modes once that many seconds have passed (the record says which were skipped).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from benchlib import device_name, write_record
from torch.utils.flop_counter import FlopCounterMode

from musicdecomp.device import autocast, pick_device
from musicdecomp.models.musicslots import MusicSlots
from musicdecomp.train.loop import Update

# name: (amp, compile mode or None, channels-last weights). Inductor's layout optimisation is turned off for the
# compiled modes in NCHW: it predicts NHWC strides for the decoder's transposed convolutions (output_padding, equal
# channels) that cuDNN does not return, and the backward pass fails its stride assertion (pytorch/pytorch#184026).
MODES = {
    "eager_fp32": ("none", None, False),
    "eager_amp": ("amp", None, False),
    "compiled_amp": ("amp", "default", False),
    "compiled_amp_channels_last": ("amp", "default", True),
    "compiled_amp_cudagraphs": ("amp", "reduce-overhead", False),
}


def make(mask: str, stride: int, batch: int, amp: str, device: torch.device, compile_mode: str | None,
         channels_last: bool = False, **model_kw):
    """A fresh model (seed 0), its optimiser, a fixed batch and the training step as a function returning
    (loss, grad norm)."""
    torch.manual_seed(0)
    model = MusicSlots(mask=mask, time_stride=stride, **model_kw).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    update = Update(model, opt, device, amp, 1.0)
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.rand(batch, 1, 128, 32, device=device, generator=gen) * 80 - 90
    options = {"triton.cudagraphs": compile_mode == "reduce-overhead"}  # what mode="reduce-overhead" sets
    if not channels_last:
        options["layout_optimization"] = False
    forward = torch.compile(model, options=options) if compile_mode else model
    cudagraphs = compile_mode == "reduce-overhead"

    def step():
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, amp):
            out = forward(x)
        loss = torch.nn.functional.mse_loss(out["recon"].float(), x)
        return loss.detach(), update(loss)

    return model, x, step


def step_flops(mask: str, stride: int, batch: int, device: torch.device, **model_kw) -> int:
    """FLOPs of one forward + backward pass (matrix multiplications and convolutions, as torch counts them)."""
    model, x, _ = make(mask, stride, batch, "none", device, None, **model_kw)
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.mse_loss(model(x)["recon"], x)
        loss.backward()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(mask, stride, batch, amp, device, compile_mode, channels_last, steps, **model_kw) -> dict:
    _, _, step = make(mask, stride, batch, amp, device, compile_mode, channels_last, **model_kw)
    t0 = time.perf_counter()
    for _ in range(3):  # compilation (and CUDA-graph recording) happens here
        step()
    sync(device)
    warm = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    per_step = (time.perf_counter() - t) / steps
    return {"steps_per_second": 1.0 / per_step, "first_3_steps_seconds": warm,
            "compile_seconds": max(0.0, warm - 3 * per_step)}


def agreement(mask, stride, batch, device, **model_kw) -> dict:
    """Loss and gradient norm of one float32 step, eager against compiled, from the same weights and batch."""
    values = {}
    for name, mode in (("eager", None), ("compiled", "default")):
        _, _, step = make(mask, stride, batch, "none", device, mode, **model_kw)
        loss, grad_norm = step()
        values[name] = (loss.item(), grad_norm.item())
    (l0, g0), (l1, g1) = values["eager"], values["compiled"]
    return {"loss_eager": l0, "loss_compiled": l1, "loss_rel_diff": abs(l1 - l0) / abs(l0),
            "grad_norm_eager": g0, "grad_norm_compiled": g1, "grad_norm_rel_diff": abs(g1 - g0) / abs(g0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--amp", default="fp16", choices=["fp16", "bf16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--masks", nargs="+", default=["none", "softmax"], choices=["none", "sigmoid", "softmax"])
    p.add_argument("--strides", nargs="+", type=int, default=[2], choices=[1, 2])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--peak-tflops", type=float, default=989.5,
                   help="dense 16-bit matrix peak of the device (H100/H200 SXM datasheet)")
    p.add_argument("--budget", type=float, default=0, help="seconds after which no new mode is started (0: none)")
    p.add_argument("--small", action="store_true", help="a 16-channel model (a quick check on CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    start = time.perf_counter()
    device = pick_device(args.device)
    name = device_name(device)
    kw = dict(dim=16, enc_channels=16) if args.small else {}
    results, skipped, checks = [], [], []
    for mask in args.masks:
        for stride in args.strides:
            flops = step_flops(mask, stride, args.batch, device, **kw)
            base = None
            for mode in args.modes:
                if args.budget and time.perf_counter() - start > args.budget:
                    skipped.append(f"{mask}-t{stride}-{mode}")
                    continue
                amp, compile_mode, channels_last = MODES[mode]
                amp = args.amp if amp == "amp" else amp
                torch._dynamo.reset()
                try:
                    r = time_mode(mask, stride, args.batch, amp, device, compile_mode, channels_last, args.steps,
                                  **kw)
                except Exception as e:  # a compiler failure is a result too: record it and go on
                    results.append({"mask": mask, "time_stride": stride, "mode": mode,
                                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                    print(f"{mask:8s} t{stride} {mode:24s} FAILED: {results[-1]['error']}", flush=True)
                    continue
                base = r["steps_per_second"] if mode == "eager_fp32" else base
                tflops = flops * r["steps_per_second"] / 1e12
                row = {"mask": mask, "time_stride": stride, "mode": mode, "amp": amp, "compile": compile_mode,
                       "channels_last": channels_last,
                       "steps_per_second": round(r["steps_per_second"], 2),
                       "speedup_over_eager_fp32": round(r["steps_per_second"] / base, 3) if base else None,
                       "compile_seconds": round(r["compile_seconds"], 1),
                       "gflops_per_step": round(flops / 1e9, 2), "achieved_tflops": round(tflops, 2),
                       "fraction_of_peak": round(tflops / args.peak_tflops, 4),
                       "minutes_per_100k_steps": round(1e5 / r["steps_per_second"] / 60, 1)}
                results.append(row)
                print(f"{mask:8s} t{stride} {mode:24s} {row['steps_per_second']:8.2f} steps/s  x"
                      f"{row['speedup_over_eager_fp32']}  compile {row['compile_seconds']} s", flush=True)
            if not args.budget or time.perf_counter() - start < args.budget:
                torch._dynamo.reset()
                checks.append({"mask": mask, "time_stride": stride, **agreement(mask, stride, args.batch, device,
                                                                                 **kw)})
                print(f"agreement: {checks[-1]}", flush=True)
    record = {"device": name, "torch": torch.__version__, "batch": args.batch, "amp": args.amp,
              "model": "small" if args.small else "paper (3.5 M parameters)", "steps_timed": args.steps,
              "peak_tflops": args.peak_tflops, "results": results, "agreement_fp32": checks,
              "skipped_for_budget": skipped, "date": time.strftime("%Y-%m-%d")}
    prefix = "musicslots_compile" + ("_small" if args.small else "")
    print(f"-> {write_record(args.out, prefix, name, record)}")


if __name__ == "__main__":
    main()
