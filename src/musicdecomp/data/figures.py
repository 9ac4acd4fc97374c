"""A figure per dataset: a few test chords with their note spectrograms and -30 dB masks, to eyeball."""

from __future__ import annotations

from pathlib import Path

import torch

from musicdecomp.data.datasets import load_split
from musicdecomp.data.jsb import midi_name
from musicdecomp.io import atomic_path
from musicdecomp.logs import get_logger

log = get_logger("figures")


def plot_examples(cfg: dict, dataset: str, split_pt: str | Path, out_png: str | Path) -> None:
    """Rows of (chord | each note's dB spectrogram | each note's mask) for ``n_examples`` seeded examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig_cfg = cfg["figures"]
    data = load_split(split_pt)
    gen = torch.Generator().manual_seed(fig_cfg["seed"])
    n = min(fig_cfg["n_examples"], len(data))
    idx = torch.randperm(len(data), generator=gen)[:n]
    b = {k: v.numpy() for k, v in data.batch(idx).items()}
    voices = b["notes"].shape[1]
    fig, axes = plt.subplots(2 * n, voices + 1, figsize=(2.0 * (voices + 1), 2.6 * 2 * n), squeeze=False)
    vmin, vmax = -100.0, float(b["chord"].max())
    for r in range(n):
        ax = axes[2 * r, 0]
        ax.imshow(b["chord"][r, 0], origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
        ax.set_title(f"chord ({int(b['n_notes'][r])} notes)", fontsize=8)
        axes[2 * r + 1, 0].axis("off")
        for v in range(voices):
            top, bottom = axes[2 * r, v + 1], axes[2 * r + 1, v + 1]
            if not b["valid"][r, v]:
                top.axis("off")
                bottom.axis("off")
                continue
            pitch = data.pitches[int(b["pitch"][r, v])]
            inst = data.program_names[int(b["instrument"][r, v])]
            top.imshow(b["notes"][r, v], origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
            top.set_title(f"{midi_name(pitch)} ({pitch}) {inst}", fontsize=7)
            bottom.imshow(b["masks"][r, v], origin="lower", aspect="auto", cmap="gray", vmin=0, vmax=1)
            bottom.set_title(f"mask >= {data.mask_db:g} dB", fontsize=7)
        for ax in axes[2 * r:2 * r + 2].flat:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mel bin")
    fig.suptitle(f"{dataset}: {Path(split_pt).stem} examples (dB mel, frames x mel bins)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    log.info("%s: %d examples -> %s", dataset, n, out_png)
