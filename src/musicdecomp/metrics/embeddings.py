"""Audio embeddings for FAD, by name: the paper's LAION-CLAP through fadtk, and an offline default.

clap-laion-audio / clap-laion-music: the paper's embeddings (fadtk's ``CLAPLaionModel``: HTSAT-tiny with
630k-audioset-best.pt / HTSAT-base with music_audioset_epoch_15_esc_90.14.pt, 48 kHz, int16-quantised audio
cut in 10 s windows with a 1 s hop, zero-padded, one 512-dim embedding per window, kept in float16 as fadtk
caches them). The audio goes through fadtk's own chain: torchaudio's Kaiser-window resampling to 48 kHz, a
16-bit PCM round trip. Needs fadtk installed (it pins numpy<2, so in an environment of its own) and the
checkpoint already on disk: it is never downloaded.

crepe-full / crepe-tiny: the offline default. CREPE (Kim et al., ICASSP 2018), the pitch network whose weights
ship inside the ``torchcrepe`` package: the output of its fifth max-pool layer (2048 dims for full, 256 for
tiny) for 64 ms frames at 16 kHz, one every 0.1 s. No package reachable here ships the weights of a general
audio embedding (VGGish, PANNs, OpenL3, CLAP, EnCodec all download them at install or run time), so this is a
stand-in: its FAD is **not comparable to the paper's FAD**, only between the rows of one table.

Every embedding maps a mono clip (samples,) at any sample rate to (n_frames, dim) float arrays.
"""

from __future__ import annotations

import importlib.metadata
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from musicdecomp.errors import UserError


@dataclass(frozen=True)
class EmbeddingInfo:
    """What a FAD table says about its embedding."""

    name: str
    dim: int
    sample_rate: int  # the rate the model runs at; clips are resampled to it
    comparable_to_paper: bool
    label: str  # a short description for table captions


class AudioEmbedding:
    """An embedding model: ``embedding(audio (samples,), sample_rate) -> (n_frames, dim)``."""

    info: EmbeddingInfo

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def embed_clips(self, clips: Iterable[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """The embeddings of each clip, in order."""
        return [self(clip, sample_rate) for clip in clips]


def _mono(audio) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be a non-empty mono clip (samples,); got shape {audio.shape}")
    return audio


class CrepeEmbedding(AudioEmbedding):
    """CREPE's fifth max-pool layer from the weights in the torchcrepe package (``capacity`` full or tiny)."""

    HOP_SECONDS = 0.1

    def __init__(self, capacity: str = "full", device: str | torch.device = "cpu", batch_frames: int = 512):
        try:
            import torchcrepe
        except ImportError as err:
            raise UserError("the crepe embeddings need torchcrepe (pip install -r requirements.txt)") from err
        if capacity not in ("full", "tiny"):
            raise ValueError(f"capacity must be 'full' or 'tiny'; got {capacity!r}")
        self.device, self.batch_frames = torch.device(device), batch_frames
        self.model = torchcrepe.Crepe(capacity)
        weights = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval().to(self.device)
        dim = {"full": 2048, "tiny": 256}[capacity]
        self.info = EmbeddingInfo(f"crepe-{capacity}", dim, torchcrepe.SAMPLE_RATE, False,
                                  f"CREPE-{capacity} (torchcrepe {importlib.metadata.version('torchcrepe')}), "
                                  "not comparable to the paper's FAD")

    @torch.no_grad()
    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torchcrepe

        x = torch.from_numpy(_mono(audio))[None]
        hop = max(1, round(self.HOP_SECONDS * sample_rate))
        frames = torchcrepe.preprocess(x, sample_rate, hop, self.batch_frames, self.device, pad=True)
        out = torch.cat([self.model(f, embed=True).reshape(len(f), -1) for f in frames])
        return out.float().cpu().numpy()


CLAP_CHECKPOINTS = {"audio": "630k-audioset-best.pt", "music": "music_audioset_epoch_15_esc_90.14.pt"}


class FadtkClapEmbedding(AudioEmbedding):
    """LAION-CLAP through fadtk (``kind`` audio or music), from a checkpoint already on disk.

    The checkpoint is looked up in ``checkpoint_dir`` (when given), then in fadtk's own
    ``.model-checkpoints`` folder.
    """

    def __init__(self, kind: str = "audio", device: str | torch.device = "cpu",
                 checkpoint_dir: str | Path | None = None):
        if kind not in CLAP_CHECKPOINTS:
            raise ValueError(f"kind must be 'audio' or 'music'; got {kind!r}")
        name, file = f"clap-laion-{kind}", CLAP_CHECKPOINTS[kind]
        try:
            from fadtk import model_loader
        except ImportError as err:
            raise UserError(f"{name} needs fadtk and laion-clap (pip install fadtk==1.1.0 in an environment of its "
                            f"own: they pin numpy<2); or use the offline default crepe-full") from err
        folders = [Path(checkpoint_dir)] if checkpoint_dir else []
        folders.append(Path(model_loader.__file__).parent / ".model-checkpoints")
        found = [f / file for f in folders if (f / file).is_file()]
        if not found:
            raise UserError(f"{name}: no checkpoint {file} in {' or '.join(map(str, folders))}; put it there "
                            f"(it is not downloaded)")
        # fadtk's CLAPLaionModel downloads a missing checkpoint in __init__: set its fields without calling it
        self.loader = model_loader.CLAPLaionModel.__new__(model_loader.CLAPLaionModel)
        model_loader.ModelLoader.__init__(self.loader, name, 512, 48000)
        self.loader.type, self.loader.model_file = kind, found[0]
        self.loader.device = torch.device(device)
        from packaging.version import Version  # as fadtk: the checkpoint's position_ids key per laion-clap version

        if Version(importlib.metadata.version("laion_clap")) < Version("1.1.6"):
            self.loader.patch_model_430(found[0])
        else:
            self.loader.unpatch_model_430(found[0])
        self.loader.load_model()
        self.info = EmbeddingInfo(name, 512, 48000, True,
                                  f"LAION-CLAP {kind} (fadtk {importlib.metadata.version('fadtk')})")

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import soundfile
        import torchaudio

        x = torch.from_numpy(_mono(audio))[None]
        if sample_rate != 48000:  # fadtk's FrechetAudioDistance.load_audio resampler
            x = torchaudio.functional.resample(x, sample_rate, 48000, lowpass_filter_width=64,
                                               rolloff=0.9475937167399596, resampling_method="sinc_interp_kaiser",
                                               beta=14.769656459379492)
        buffer = io.BytesIO()  # fadtk writes 16-bit PCM, then reads it back as int16 / 32768
        soundfile.write(buffer, x[0].numpy(), 48000, format="WAV", subtype="PCM_16")
        buffer.seek(0)
        wav = soundfile.read(buffer, dtype="int16")[0] / 32768.0
        return np.asarray(self.loader.get_embedding(wav))


EMBEDDINGS = ("crepe-full", "crepe-tiny", "clap-laion-audio", "clap-laion-music")
DEFAULT_EMBEDDING = "crepe-full"


def get_embedding(name: str = DEFAULT_EMBEDDING, *, device: str | torch.device = "cpu",
                  checkpoint_dir: str | Path | None = None) -> AudioEmbedding:
    """The embedding called ``name`` (one of ``EMBEDDINGS``), loaded on ``device``; ``checkpoint_dir``: where the
    CLAP checkpoints are."""
    if name not in EMBEDDINGS:
        raise UserError(f"unknown FAD embedding {name!r}; use one of {', '.join(EMBEDDINGS)}")
    family, kind = name.rsplit("-", 1)
    if family == "crepe":
        return CrepeEmbedding(kind, device)
    return FadtkClapEmbedding(kind, device, checkpoint_dir)
