"""The Slakh2100 adapter on a tiny fake tree (metadata.yaml + FLAC stems), and 7-s chunking."""

import numpy as np
import pytest
import soundfile as sf
import yaml

from musicdecomp.data.chunks import chunk_signals, rms
from musicdecomp.data.slakh import class_signals, list_tracks
from musicdecomp.errors import UserError

SR = 24000


def write_track(root, split, name, stems, sr=44100, seconds=2.0):
    """stems: {stem_id: (inst_class, amplitude or None for a missing file)}."""
    folder = root / split / name
    (folder / "stems").mkdir(parents=True)
    meta = {"audio_dir": "stems", "stems": {}}
    t = np.arange(int(seconds * sr)) / sr
    for i, (stem, (cls, amp)) in enumerate(stems.items()):
        meta["stems"][stem] = {"inst_class": cls, "program_num": i, "is_drum": cls == "Drums"}
        if amp is not None:
            tone = (amp * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32)
            sf.write(folder / "stems" / f"{stem}.flac", tone, sr, subtype="PCM_24")
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))


@pytest.fixture
def fake_slakh(tmp_path):
    root = tmp_path / "slakh2100_flac_redux"
    write_track(root, "train", "Track00001", {"S00": ("Drums", 0.5), "S01": ("Bass", 0.2), "S02": ("Bass", 0.4),
                                              "S03": ("Guitar", 0.3)})
    write_track(root, "train", "Track00002", {"S00": ("Drums", 0.5), "S01": ("Piano", 0.2)})  # no bass
    write_track(root, "train", "Track00003", {"S00": ("Drums", 0.5), "S01": ("Bass", None)})  # missing file
    write_track(root, "validation", "Track01501", {"S00": ("Drums", 0.1), "S01": ("Bass", 0.1)})
    return root


def test_tracks_are_grouped_by_class_and_incomplete_ones_skipped(fake_slakh):
    tracks = list_tracks(fake_slakh, "train", ["Drums", "Bass"])
    assert [t.name for t in tracks] == ["Track00001"]
    assert [p.name for p in tracks[0].stems["Bass"]] == ["S01.flac", "S02.flac"]
    assert [t.name for t in list_tracks(fake_slakh, "valid", ["Drums", "Bass"])] == ["Track01501"]
    with pytest.raises(UserError, match="Slakh split folder .*test does not exist"):
        list_tracks(fake_slakh, "test", ["Drums", "Bass"])


def test_class_signal_is_the_mean_of_its_stems_at_24k(fake_slakh):
    track = list_tracks(fake_slakh, "train", ["Drums", "Bass"])[0]
    sig = class_signals(track, SR)
    assert set(sig) == {"Drums", "Bass"} and len(sig["Drums"]) == len(sig["Bass"]) == 2 * SR
    t = np.arange(2 * SR) / SR
    expected_bass = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.4 * np.sin(2 * np.pi * 660 * t)) / 2
    inner = slice(1000, -1000)  # away from the resampler's edges
    assert np.abs(sig["Bass"][inner] - expected_bass[inner]).max() < 2e-3


def test_chunks_drop_silence_and_mix_is_the_mean():
    n = 3 * 7 * SR + 500  # three full chunks and a tail
    drums = np.full(n, 0.1, dtype=np.float32)
    bass = np.full(n, 0.2, dtype=np.float32)
    bass[7 * SR: 14 * SR] = 0.005  # the second chunk's bass is near silent
    chunks = list(chunk_signals({"drums": drums, "bass": bass}, 7 * SR, 0.01))
    assert [start for start, _, _ in chunks] == [0, 14 * SR]
    start, parts, mix = chunks[0]
    assert len(mix) == 7 * SR and np.allclose(mix, 0.15)
    assert rms(parts["bass"]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="differ in length"):
        list(chunk_signals({"a": drums, "b": bass[:-1]}, 7 * SR, 0.01))
