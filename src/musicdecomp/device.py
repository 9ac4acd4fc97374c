"""The device a step runs on and the precision of its forward pass."""

from __future__ import annotations

import torch

from musicdecomp.errors import UserError


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} was asked for but CUDA is not available; use --device auto or cpu")
    return torch.device(requested)


AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the ``amp`` settings that autocast (on CUDA); "none": off


def autocast(device: torch.device, amp: str):
    """The forward pass's precision: ``amp`` (bf16 or fp16) autocast on CUDA; float32 on CPU and for "none"."""
    if device.type == "cuda" and amp in AMP:
        return torch.autocast("cuda", dtype=AMP[amp])
    return torch.autocast(device.type, enabled=False)
