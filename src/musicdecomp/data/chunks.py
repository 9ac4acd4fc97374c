"""Cut aligned class signals into fixed-length chunks, as the composable-representations code does:
non-overlapping chunks (the tail is dropped), a chunk is dropped when any class has RMS below ``min_rms``,
and the mixture is the mean of the class signals."""

from __future__ import annotations

import numpy as np


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def chunk_signals(signals: dict[str, np.ndarray], chunk_len: int, min_rms: float):
    """Yield (offset, {class: chunk}, mix) for every kept chunk; ``signals`` must have equal lengths."""
    lengths = {len(s) for s in signals.values()}
    if len(lengths) != 1:
        raise ValueError(f"class signals differ in length: {sorted(lengths)}")
    n = lengths.pop()
    for start in range(0, n - chunk_len + 1, chunk_len):
        parts = {c: s[start:start + chunk_len] for c, s in signals.items()}
        if all(rms(p) >= min_rms for p in parts.values()):
            yield start, parts, np.mean(list(parts.values()), axis=0).astype(np.float32)
