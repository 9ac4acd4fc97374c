"""Blind source separation on the test split: the composable-representations models and the classic baselines on
the same seeded chunks, scored the same way.

Chunks (``pick_chunks``): ``max_chunks`` of a subset's test chunks drawn with ``seed``, each with a crop offset
(the models see ``crop_frames`` of the 525 codec frames; the audio is cut to the same samples). Every method's
output records its chunk list, and the tables refuse methods evaluated on different ones.

Scores, per chunk and source: SI-SDR, SI-SIR and SI-SAR (``musicdecomp.metrics.separation``, the permutation of
the estimates with the best mean SI-SIR per chunk) against two references: the raw stems (``raw``: the common
reference of every method) and the stems decoded by the codec from their cached codes (``decoded``: the released
code's choice, the ceiling a codec-latent model can reach). The decomposition models also reconstruct the mixture
(the composition of all N latents): latent MSE against the input latent (per element, and summed over the crop as
the paper's code logs it) and the MS-STFT distance of the decoded reconstruction against the decoded input (the
paper's Table 3) and against the raw mixture.

Outputs: ``separation.json`` (per-chunk scores, summaries, the chunks), and for a few chunks WAV files (mixture,
true stems, estimates) and a spectrogram figure.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from musicdecomp.data.stems import read_position
from musicdecomp.device import pick_device
from musicdecomp.errors import UserError
from musicdecomp.io import atomic_dir, atomic_path, read_json, write_json
from musicdecomp.logs import get_logger, progress
from musicdecomp.metrics.msstft import ms_stft_distance
from musicdecomp.metrics.separation import METRICS, matched_si_metrics, summarize
from musicdecomp.models.codes import load_codes, subset_codes
from musicdecomp.models.composable import SUPERVISED, build_model
from musicdecomp.models.encodec import codes_to_latent, latent_to_audio, load_codec
from musicdecomp.models.iadb import iadb_sample
from musicdecomp.train.checkpoints import load_best
from musicdecomp.train.tracking import log_to_training_run

log = get_logger("separation")
BASELINE_REFERENCES = ("oracle_irm", "mixture")  # always evaluated beside the classic methods


def pick_chunks(n_items: int, max_chunks: int | None, seed: int, subset: str, span: int) -> list[tuple[int, int]]:
    """(chunk, crop offset in frames) for ``max_chunks`` seeded chunks of a subset's ``n_items`` test chunks, in
    chunk order; offsets are drawn in [0, span)."""
    rng = random.Random(f"{seed}/{subset}")
    order = list(range(n_items))
    rng.shuffle(order)
    picked = sorted(order[: max_chunks or n_items])
    return [(i, rng.randrange(span)) for i in picked]


class TestChunks:
    """The picked test chunks of a subset: raw stems and mixture audio, mixture and stem latents, cropped alike."""

    def __init__(self, cfg: dict, subset: str, codec_info: dict, codes_path: str | Path, index_path: str | Path,
                 crop_frames: int):
        payload = load_codes(codes_path)
        if payload["bandwidth"] != codec_info["bandwidth"] or payload.get("codec", {}).get("sha256") != \
                codec_info["sha256"]:
            raise UserError(f"{codes_path} was cached with another codec than results/codec/model.pt; rerun the "
                            f"cache_codes step")
        self.codes = subset_codes(payload, subset)
        self.index_path = Path(index_path)
        self.index = read_json(self.index_path, "rerun the stems step")
        self.subset, self.classes = subset, list(payload["subsets"][subset]["classes"])
        frames = self.codes["mix"].shape[-1]
        if frames < crop_frames:
            raise UserError(f"crop_frames {crop_frames} exceeds the {frames} frames of a cached chunk")
        if len(self.codes["mix"]) == 0:
            raise UserError(f"the test split holds no chunk of subset {subset!r}; render more stems")
        self.hop = self.index["chunk_len"] // frames
        self.crop_frames, self.samples = crop_frames, crop_frames * self.hop
        self.sample_rate = codec_info["sample_rate"]
        self.picked = pick_chunks(len(self.codes["mix"]), cfg["max_chunks"], cfg["seed"], subset,
                                  frames - crop_frames + 1)

    def audio(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(raw stems (N, samples), mixture (samples)) of the k-th picked chunk: the mean of the stems."""
        item, offset = self.picked[k]
        index = self.index
        audio = read_position(index, self.index_path.parent / index["folder"], index["chunks"][self.subset][item])
        stems = audio[[index["classes"].index(c) for c in self.classes]]
        stems = stems[:, offset * self.hop: offset * self.hop + self.samples].astype(np.float64)
        return stems, stems.mean(axis=0)

    def latents(self, codec, ks: list[int], device, sources: bool = False) -> torch.Tensor:
        """Mixture latents (B, C, crop) of picked chunks ``ks`` (``sources``: the stems', (B, N, C, crop))."""
        items = [self.picked[k][0] for k in ks]
        frames = torch.stack([torch.arange(off, off + self.crop_frames) for _, off in (self.picked[k] for k in ks)])

        def crop(codes):
            return torch.stack([c[:, f] for c, f in zip(codes[items], frames)])

        with torch.no_grad():
            if not sources:
                return codes_to_latent(codec, crop(self.codes["mix"]).to(device)).float()
            return torch.stack([codes_to_latent(codec, crop(self.codes[c]).to(device)).float() for c in self.classes],
                               dim=1)


def _collect(per_chunk: list[dict]) -> dict:
    """Per-chunk scores [{ref: ({metric: (N,)}, perm)}] -> {ref: {metric: (chunks, N) lists}, permutation}."""
    out: dict = {}
    for ref in per_chunk[0]:
        out[ref] = {m: np.stack([c[ref][0][m] for c in per_chunk]) for m in METRICS}
        out[ref]["permutation"] = np.stack([c[ref][1] for c in per_chunk])
    return out


def _summaries(scores: dict) -> dict:
    return {ref: {"all": summarize({m: s[m].ravel() for m in METRICS}),
                  "per_source": [summarize({m: s[m][:, i] for m in METRICS}) for i in range(s["si_sdr"].shape[1])]}
            for ref, s in scores.items()}


def _jsonable(scores: dict) -> dict:
    return {ref: {k: np.asarray(v).tolist() for k, v in s.items()} for ref, s in scores.items()}


def _decode(codec, latents: torch.Tensor) -> np.ndarray:
    return latent_to_audio(codec, latents).double().cpu().numpy()


def _rms_db(x: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.mean(x ** 2, axis=-1) + 1e-12)


@torch.no_grad()
def evaluate_composable(cfg: dict, run_dir: str | Path, codec_path: str | Path, codes_path: str | Path,
                        index_path: str | Path, out_json: str | Path, examples_dir: str | Path,
                        figure: str | Path, device: str = "auto", tracking: dict | None = None) -> dict:
    """Separate (and, for the decomposition models, reconstruct) the picked test chunks with a trained run:
    source i is IADB sampling conditioned on z_i alone from one noise draw per chunk shared by the sources."""
    dev = pick_device(device)
    best = load_best(run_dir)
    run = best["config"]
    codec, info = load_codec(codec_path)
    codec = codec.to(dev)
    chunks = TestChunks(cfg, run["subset"], info, codes_path, index_path, run["model"]["crop_frames"])
    if chunks.classes != run["classes"]:
        raise UserError(f"{run_dir} was trained on the sources {run['classes']}, the test codes of subset "
                        f"{run['subset']!r} hold {chunks.classes}; train the run again")
    model = build_model(run["model"], run["variant"], len(run["classes"]), codec.quantizer.dimension).to(dev)
    model.load_state_dict(best["model"])
    model.eval()
    variant, n = run["train"]["iadb_variant"], len(run["classes"])
    composed = run["variant"] != SUPERVISED
    per_chunk, recon, loud, examples = [], {"latent_mse": [], "latent_sse": [], "ms_stft": [], "ms_stft_raw": []}, \
        [], []
    ks_all = list(range(len(chunks.picked)))
    for start in progress(range(0, len(ks_all), cfg["batch_size"]), desc=f"separate {run['run_name']}",
                          unit="batch"):
        ks = ks_all[start:start + cfg["batch_size"]]
        x_raw = chunks.latents(codec, ks, dev)
        x = model.norm(x_raw)
        noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(
            cfg["seed"] * 1_000_003 + chunks.picked[k][0])) for k in ks]).to(dev)
        if composed:
            z = model.encode(x)
            est = [iadb_sample(lambda xa, a: model(xa, a, z, component=i), noise, steps=cfg["sample_steps"],
                               variant=variant) for i in range(n)]
            rec = model.norm.inverse(iadb_sample(lambda xa, a: model(xa, a, z), noise, steps=cfg["sample_steps"],
                                                 variant=variant))
        else:
            est = [iadb_sample(lambda xa, a: model(xa, a, x, torch.full((len(ks),), i, device=dev)), noise,
                               steps=cfg["sample_steps"], variant=variant) for i in range(n)]
        est_audio = np.stack([_decode(codec, model.norm.inverse(e)) for e in est], axis=1)  # (B, N, samples)
        ref_decoded = np.stack([_decode(codec, s) for s in chunks.latents(codec, ks, dev, sources=True).unbind(1)],
                               axis=1)
        input_audio = _decode(codec, x_raw)
        if composed:
            rec_audio = _decode(codec, rec)
            recon["latent_mse"] += ((rec - x_raw) ** 2).mean(dim=(1, 2)).tolist()
            recon["latent_sse"] += ((rec - x_raw) ** 2).sum(dim=(1, 2)).tolist()
            recon["ms_stft"] += ms_stft_distance(torch.from_numpy(rec_audio), torch.from_numpy(input_audio)).tolist()
        for j, k in enumerate(ks):
            stems, mixture = chunks.audio(k)
            per_chunk.append({"raw": matched_si_metrics(stems, est_audio[j]),
                              "decoded": matched_si_metrics(ref_decoded[j], est_audio[j])})
            loud.append(_rms_db(stems).tolist())
            if composed:
                recon["ms_stft_raw"].append(float(ms_stft_distance(torch.from_numpy(rec_audio[j:j + 1]),
                                                                   torch.from_numpy(mixture[None]))[0]))
            if k < cfg["n_examples"]:
                perm = per_chunk[-1]["raw"][1]
                examples.append({"chunk": chunks.picked[k], "mixture": mixture, "stems": stems,
                                 "estimates": est_audio[j][perm],
                                 "reconstruction": rec_audio[j] if composed else None})
    scores = _collect(per_chunk)
    result = {"method": run["variant"], "kind": "composable" if composed else "supervised",
              "run": run["run_name"], "subset": run["subset"], "classes": run["classes"], "split": "test",
              "chunks": [list(c) for c in chunks.picked], "sample_steps": cfg["sample_steps"],
              "best_step": best["step"], "summary": _summaries(scores), "per_chunk": _jsonable(scores),
              "source_rms_db": loud}
    if composed:
        result["reconstruction"] = {k: summarize({k: np.asarray(v)})[k] for k, v in recon.items()}
        result["per_chunk"]["reconstruction"] = recon
    _write_examples(examples, chunks.classes, chunks.sample_rate, examples_dir)
    plot_examples(examples, chunks.classes, figure, f"{run['run_name']} (test)")
    write_json(out_json, result)
    s = result["summary"]["raw"]["all"]
    log.info("%s: SI-SDR %.2f dB, SI-SIR %.2f dB, SI-SAR %.2f dB over %d chunks (raw stems)", run["run_name"],
             s["si_sdr"]["mean"], s["si_sir"]["mean"], s["si_sar"]["mean"], len(chunks.picked))
    if tracking:
        metrics = {f"test/{m}": s[m]["mean"] for m in METRICS}
        if composed:
            metrics.update({f"test/{k}": v["mean"] for k, v in result["reconstruction"].items()})
        log_to_training_run(run_dir, tracking, metrics, (Path(figure), Path(out_json), Path(examples_dir)))
    return result


def _baseline_chunk(args) -> dict:
    """All baseline methods on one chunk (a worker process): {method: estimates (N, samples)}."""
    from musicdecomp.eval.separators import oracle_irm, separate  # librosa and scikit-learn: the baselines' alone

    stems, mixture, methods, sample_rate, settings = args
    n = len(stems)
    out = {}
    for m in methods:
        if m == "oracle_irm":
            out[m] = oracle_irm(mixture, stems, sample_rate)
        else:
            out[m] = separate(m, mixture, n, sample_rate, **settings.get(m, {}))
    return out


@torch.no_grad()
def evaluate_baselines(cfg: dict, subset: str, codec_path: str | Path, codes_path: str | Path,
                       index_path: str | Path, out_json: str | Path, examples_dir: str | Path,
                       device: str = "auto", workers: int = 1, block: int = 16) -> dict:
    """The classic separators (``cfg["methods"]``), the oracle ideal ratio mask and the mixture itself on the
    picked test chunks of ``subset``, ``workers`` chunks at a time."""
    dev = pick_device(device)
    codec, info = load_codec(codec_path)
    codec = codec.to(dev)
    crop_frames = cfg["crop_frames"]
    chunks = TestChunks(cfg, subset, info, codes_path, index_path, crop_frames)
    n = len(chunks.classes)
    methods = [m for m in cfg["methods"] if n == 2 or m == "nmf"] + list(BASELINE_REFERENCES)
    skipped = [m for m in cfg["methods"] if m not in methods]
    if skipped:
        log.warning("%s has %d sources: %s separate into two only and are left out", subset, n, ", ".join(skipped))
    settings = {"nmf": {"n_components": cfg["nmf_components"]}}
    per_method: dict[str, list] = {m: [] for m in methods}
    examples: dict[str, list] = {m: [] for m in methods}
    loud = []
    ctx = get_context("spawn")
    ks_all = list(range(len(chunks.picked)))
    with ProcessPoolExecutor(max(1, workers), mp_context=ctx) if workers > 1 else _Serial() as pool:
        for start in progress(range(0, len(ks_all), block), desc=f"baselines {subset}", unit="block"):
            ks = ks_all[start:start + block]
            audio = [chunks.audio(k) for k in ks]
            ref_decoded = np.stack([_decode(codec, s) for s in chunks.latents(codec, ks, dev, sources=True).unbind(1)],
                                   axis=1)
            jobs = [(stems, mixture, methods, chunks.sample_rate, settings) for stems, mixture in audio]
            for j, (k, outs) in enumerate(zip(ks, pool.map(_baseline_chunk, jobs))):
                stems, mixture = audio[j]
                loud.append(_rms_db(stems).tolist())
                for m, est in outs.items():
                    per_method[m].append({"raw": matched_si_metrics(stems, est),
                                          "decoded": matched_si_metrics(ref_decoded[j], est)})
                    if k < cfg["n_examples"]:
                        examples[m].append({"chunk": chunks.picked[k], "mixture": mixture, "stems": stems,
                                            "estimates": est[per_method[m][-1]["raw"][1]], "reconstruction": None})
    result = {"subset": subset, "classes": chunks.classes, "split": "test",
              "chunks": [list(c) for c in chunks.picked], "source_rms_db": loud, "methods": {}}
    for m in methods:
        scores = _collect(per_method[m])
        kind = "oracle" if m == "oracle_irm" else "mixture" if m == "mixture" else "baseline"
        result["methods"][m] = {"method": m, "kind": kind, "summary": _summaries(scores),
                                "per_chunk": _jsonable(scores)}
        s = result["methods"][m]["summary"]["raw"]["all"]["si_sdr"]
        log.info("%s %s: SI-SDR %.2f dB (raw stems)", subset, m, s["mean"])
    with atomic_dir(examples_dir) as tmp:
        for m in methods:
            _write_examples(examples[m], chunks.classes, chunks.sample_rate, tmp / m, atomic=False)
    write_json(out_json, result)
    return result


class _Serial:
    """A pool of one: runs in this process (workers = 1, and tests)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, jobs):
        return map(fn, jobs)


def _write_examples(examples: list[dict], classes: list[str], sample_rate: int, folder: str | Path,
                    atomic: bool = True) -> None:
    """WAV files per example chunk: the mixture, each true stem, each estimate (matched to its stem) and the
    reconstruction."""
    import soundfile as sf

    def write(tmp: Path):
        tmp.mkdir(parents=True, exist_ok=True)
        for e, ex in enumerate(examples):
            sf.write(tmp / f"ex{e}_mixture.wav", ex["mixture"].astype(np.float32), sample_rate)
            for c, stem, est in zip(classes, ex["stems"], ex["estimates"]):
                sf.write(tmp / f"ex{e}_{c}_true.wav", stem.astype(np.float32), sample_rate)
                peak = max(np.abs(est).max(), 1e-9)  # estimates of scale-invariant methods: normalised to 0.9
                sf.write(tmp / f"ex{e}_{c}_estimate.wav", (0.9 * est / max(peak, 0.9)).astype(np.float32),
                         sample_rate)
            if ex["reconstruction"] is not None:
                sf.write(tmp / f"ex{e}_reconstruction.wav", ex["reconstruction"].astype(np.float32), sample_rate)

    if atomic:
        with atomic_dir(folder) as tmp:
            write(Path(tmp))
    else:
        write(Path(folder))


def log_spectrogram(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    spec = torch.stft(torch.from_numpy(np.asarray(x, dtype=np.float32)), n_fft, hop,
                      window=torch.hann_window(n_fft), return_complex=True).abs()
    return 20 * np.log10(spec.numpy() + 1e-5)


def plot_spectrogram_grid(rows: list[list[tuple[str, np.ndarray]]], out_png: str | Path, title: str) -> None:
    """A grid of log spectrograms, a row per list of (panel title, audio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, max((len(r) for r in rows), default=1))
    fig, axes = plt.subplots(max(1, len(rows)), cols, figsize=(2.6 * cols, 2.2 * max(1, len(rows))), squeeze=False)
    for r, panels in enumerate(rows):
        for ax, (name, x) in zip(axes[r], panels):
            ax.imshow(log_spectrogram(x), origin="lower", aspect="auto", vmin=-80, vmax=20, cmap="magma")
            ax.set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def plot_examples(examples: list[dict], classes: list[str], out_png: str | Path, title: str) -> None:
    """Rows of spectrograms per example chunk: mixture | true stems | estimates."""
    plot_spectrogram_grid([[("mixture", ex["mixture"])] + [(f"{c} (true)", s) for c, s in zip(classes, ex["stems"])]
                           + [(f"{c} (estimate)", e) for c, e in zip(classes, ex["estimates"])] for ex in examples],
                          out_png, title)
