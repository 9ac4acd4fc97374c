"""Generation with the recomposition prior on the test split: FAD of unconditional generations and of variations,
and the variations' diversity (the paper's Tables 4-5).

On seeded test chunks (``pick_chunks``, as the separation evaluation picks them), z is the decomposition model's
encoding of each chunk's mixture latent. Audio sets, each embedded (``metrics.embeddings``) and fitted by a
Gaussian: the raw test mixtures (``original``), the codec's decoding of them (the ceiling any codec-latent model
meets), the decomposition model's reconstruction from the true z (``encoded``, the paper's other reference: the
prior cannot beat the model that renders it), unconditional generations (every latent sampled), and per source
the variations that regenerate it given the others' true latents (``variations`` draws per chunk). FAD against the
original and against the encoded set. Diversity of the regenerated source: latent MSE of its z against the true z
(``real``) and against another test chunk's (``rand``), and the MS-STFT distance of its rendering against the true
stem's audio and another chunk's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from musicdecomp.device import pick_device
from musicdecomp.eval.separation import TestChunks, plot_spectrogram_grid
from musicdecomp.io import atomic_dir, write_json
from musicdecomp.logs import get_logger, progress
from musicdecomp.metrics.diversity import diversity
from musicdecomp.metrics.embeddings import get_embedding
from musicdecomp.metrics.frechet import fad, gaussian_fit
from musicdecomp.metrics.msstft import ms_stft_distance
from musicdecomp.metrics.separation import summarize
from musicdecomp.models.encodec import latent_to_audio, load_codec
from musicdecomp.models.generation import render, unconditional, variations
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.prior import load_decomposition, prior_from_config
from musicdecomp.train.tracking import log_to_training_run

log = get_logger("generation")


def _fad(reference, evaluated) -> float | None:
    """FAD, or None where the sets are too small for the embedding's dimension (a tiny run)."""
    try:
        return fad(reference, evaluated)
    except ValueError as e:
        log.warning("FAD not computed: %s", e)
        return None


@torch.no_grad()
def evaluate_generation(cfg: dict, prior_dir: str | Path, decomposition_dir: str | Path, codec_path: str | Path,
                        codes_path: str | Path, index_path: str | Path, out_json: str | Path,
                        examples_dir: str | Path, figure: str | Path, device: str = "auto",
                        tracking: dict | None = None) -> dict:
    """Tables 4-5's measurements for one trained prior (see the module docstring); ``cfg``: composable.prior.eval."""
    dev = pick_device(device)
    best = load_best(prior_dir)
    run = best["config"]
    model, dcfg = load_decomposition(decomposition_dir, dev)
    prior = prior_from_config(run["prior"], len(run["classes"])).to(dev)
    prior.load_state_dict(best["model"])
    prior.eval()
    codec, info = load_codec(codec_path)
    codec = codec.to(dev)
    frames, classes = dcfg["model"]["crop_frames"], run["classes"]
    chunks = TestChunks(cfg, run["subset"], info, codes_path, index_path, frames)
    embed = get_embedding(cfg["embedding"], device=dev)
    gen = torch.Generator(device=dev).manual_seed(cfg["seed"])
    steps, draws, variant = cfg["sample_steps"], cfg["variations"], dcfg["train"]["iadb_variant"]

    def decode(latent):
        return latent_to_audio(codec, latent).float()

    sets: dict[str, list[np.ndarray]] = {}
    zs, zvars, ms_real, ms_rand, examples = [], {c: [] for c in classes}, {c: [] for c in classes}, \
        {c: [] for c in classes}, []
    n_chunks = len(chunks.picked)
    ks_all = list(range(n_chunks))
    for start in progress(range(0, len(ks_all), cfg["batch_size"]), desc=f"generate {run['run_name']}",
                          unit="batch"):
        ks = ks_all[start:start + cfg["batch_size"]]
        x = chunks.latents(codec, ks, dev)
        z = model.encode(model.norm(x))
        zs.append(z.cpu())
        audio = {k: chunks.audio(k) for k in ks}  # (stems, mixture), read once per chunk
        # the "random" stem of chunk k (the b-th of its batch): another test chunk's, read only where it is needed
        others = {k: (k + 1 + b) % n_chunks if n_chunks > 1 else k for b, k in enumerate(ks)}
        stems = {o: audio[o][0] if o in audio else chunks.audio(o)[0] for o in {*ks, *others.values()}}
        clips = {"original": np.stack([audio[k][1] for k in ks]), "codec": decode(x).cpu().numpy(),
                 "encoded": render(model, z, variant=variant, steps=steps, generator=gen, sources=False,
                                   decode=decode)["mixture"].cpu().numpy()}
        z_uncond = unconditional(prior, len(ks), frames, steps=steps, generator=gen, device=dev)
        uncond = render(model, z_uncond, variant=variant, steps=steps, generator=gen, decode=decode)
        clips["unconditional"] = uncond["mixture"].cpu().numpy()
        for j, name in enumerate(classes if run["p_mask"] < 1 else ()):  # source j given the others' true latents
            # (an unconditional-only prior, p_mask 1, never learnt to condition: it only generates)
            keep = [i for i in range(len(classes)) if i != j]
            zv = variations(prior, z, keep, draws=draws, steps=steps, generator=gen)  # (B, draws, N, 1, T)
            zvars[name].append(zv.cpu())
            out = render(model, zv.flatten(0, 1), variant=variant, steps=steps, generator=gen, decode=decode)
            clips[f"regenerated_{name}"] = out["mixture"].cpu().numpy()
            src = out["sources"][:, j].cpu().reshape(len(ks), draws, -1)
            for b, k in enumerate(ks):
                true = torch.from_numpy(stems[k][j]).float()
                other = torch.from_numpy(stems[others[k]][j]).float()
                ms_real[name] += ms_stft_distance(src[b], true.expand_as(src[b])).tolist()
                ms_rand[name] += ms_stft_distance(src[b], other.expand_as(src[b])).tolist()
            if start == 0:
                examples.append((f"regenerated {name}", out["mixture"][: cfg["n_examples"]].cpu().numpy(),
                                 out["sources"][: cfg["n_examples"]].cpu().numpy()))
        if start == 0:
            examples.insert(0, ("unconditional", uncond["mixture"][: cfg["n_examples"]].cpu().numpy(),
                                uncond["sources"][: cfg["n_examples"]].cpu().numpy()))
        for name, audio in clips.items():
            sets.setdefault(name, []).extend(embed(a, chunks.sample_rate) for a in audio)
    fits = {name: gaussian_fit(v) for name, v in sets.items()}
    references = {"original": fits["original"], "encoded": fits["encoded"]}
    fads = {name: {ref: (None if name == ref or (name == "codec" and ref == "encoded") else _fad(r, fit))
                   for ref, r in references.items()} for name, fit in fits.items() if name != "original"}
    truth = torch.cat(zs)
    div = {}
    for j, name in enumerate(classes if run["p_mask"] < 1 else ()):
        latent = diversity(torch.cat(zvars[name]).numpy(), truth.numpy(), truth.numpy(), [j], names=classes,
                           own_index=list(range(len(truth))), seed=cfg["seed"])[name]
        div[name] = {"latent_mse": latent, "ms_stft": {"real": summarize({"v": np.asarray(ms_real[name])})["v"],
                                                       "rand": summarize({"v": np.asarray(ms_rand[name])})["v"]}}
    result = {"run": run["run_name"], "subset": run["subset"], "classes": classes, "p_mask": run["p_mask"],
              "decomposition": dcfg["run_name"], "split": "test", "chunks": [list(c) for c in chunks.picked],
              "sample_steps": steps, "variations": draws, "embedding": embed.info.__dict__, "fad": fads,
              "diversity": div}
    _write_examples(examples, classes, chunks.sample_rate, examples_dir)
    _plot(examples, classes, figure, run["run_name"])
    write_json(out_json, result)
    log.info("%s: FAD vs original, unconditional %s; %s", run["run_name"], fads["unconditional"]["original"],
             ", ".join(f"regenerated {c} {fads[f'regenerated_{c}']['original']}" for c in classes
                       if f"regenerated_{c}" in fads))
    if tracking:
        metrics = {f"test/fad_{k}": v["original"] for k, v in fads.items() if v.get("original") is not None}
        log_to_training_run(prior_dir, tracking, metrics, (Path(figure), Path(out_json), Path(examples_dir)))
    return result


def _write_examples(examples: list, classes: list[str], sample_rate: int, folder: str | Path) -> None:
    import soundfile as sf

    with atomic_dir(folder) as tmp:
        for kind, mixtures, sources in examples:
            tag = kind.replace(" ", "_")
            for e, mix in enumerate(mixtures):
                sf.write(tmp / f"{tag}_ex{e}_mixture.wav", mix.astype(np.float32), sample_rate)
                for c, s in zip(classes, sources[e]):
                    sf.write(tmp / f"{tag}_ex{e}_{c}.wav", s.astype(np.float32), sample_rate)


def _plot(examples: list, classes: list[str], out_png: str | Path, title: str) -> None:
    """A row per kind of generation (its first example): the mixture and each source."""
    plot_spectrogram_grid([[(f"{kind}: mixture", mixtures[0])] + [(f"{kind}: {c}", s) for c, s in
                                                                   zip(classes, sources[0])]
                           for kind, mixtures, sources in examples], out_png, title)
