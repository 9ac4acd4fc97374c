"""Rendered multi-stem data: voices, drum parts, sample-aligned stems, chunk filtering, disjoint splits; and
the Slakh source writing the same format."""

import json
import random

import numpy as np
import pytest
import soundfile as sf
from test_slakh import write_track

from musicdecomp.config import deep_merge
from musicdecomp.data.chunks import rms
from musicdecomp.data.drums import CRASH, GROOVES, drum_part
from musicdecomp.data.stems import build_stems, load_chunk, read_separated, voice_notes
from musicdecomp.pipeline import step_config


def test_voice_notes_hold_repeats_and_skip_rests():
    chorale = [[72, 67, 64, 48], [72, 67, 64, 48], [74, -1, 65, 50], [74, 69, 65, 50]]
    assert voice_notes(chorale, 0) == [(0, 2, 72), (2, 4, 74)]
    assert voice_notes(chorale, 1) == [(0, 2, 67), (3, 4, 69)]


def test_drum_parts_are_seeded_and_varied():
    g1, a = drum_part(64, random.Random(1))
    _, b = drum_part(64, random.Random(1))
    assert a == b  # same seed, same part
    parts = {tuple(drum_part(64, random.Random(s))[1]) for s in range(10)}
    assert len(parts) == 10
    assert {drum_part(64, random.Random(s))[0] for s in range(40)} == set(GROOVES)
    assert all(0 <= t < 64 and 1 <= v <= 127 for t, _, v in a)
    assert (0, CRASH) in {(t, n) for t, n, _ in a}  # a crash opens the first phrase
    assert g1 in GROOVES


@pytest.fixture(scope="module")
def tiny_stems(tmp_path_factory, params, soundfont, jsb16_json):
    p = deep_merge(params, {"stems": {"max_chorales": 2, "renders_per_chorale": 2}})
    out = tmp_path_factory.mktemp("stems")
    summary = build_stems(step_config(p, "stems"), jsb16_json, out, workers=2)
    return out, summary, read_separated(jsb16_json)


def test_renders_are_aligned_and_mixtures_are_means(tiny_stems):
    out, summary, _ = tiny_stems
    assert summary["splits"]["train"]["renders"] == 4 and summary["sample_rate"] == 24000
    info = sf.info(out / "train" / "c000_r0.flac")
    assert info.channels == 3 and info.samplerate == 24000  # drums, bass, piano in one file: sample-aligned
    index = json.loads((out / "train.json").read_text())
    assert index["chunk_len"] == 7 * 24000
    for subset, classes in index["subsets"].items():
        assert len(index["chunks"][subset]) > 0, subset
        stems, mix = load_chunk(out / "train.json", subset, 0)
        assert list(stems) == classes and all(len(x) == 7 * 24000 for x in stems.values())
        assert np.allclose(mix, np.mean(list(stems.values()), axis=0))
        assert min(rms(x) for x in stems.values()) >= 0.01
    r0, r1 = index["renders"][0], index["renders"][1]
    assert r0["chorale"] == r1["chorale"] == 0 and (r0["tempo"], r0["groove"]) != (r1["tempo"], r1["groove"])
    assert 70 <= r0["tempo"] <= 140 and 32 <= r0["bass_program"] <= 39 and 0 <= r0["piano_program"] <= 7


def test_splits_are_disjoint_by_chorale(tiny_stems):
    out, _, data = tiny_stems
    seen = {}
    for split in ("train", "valid", "test"):
        index = json.loads((out / f"{split}.json").read_text())
        seen[split] = {json.dumps(data[split][r["chorale"]]) for r in index["renders"]}
    assert not (seen["train"] & seen["valid"] or seen["train"] & seen["test"] or seen["valid"] & seen["test"])


def test_rendering_is_deterministic(tiny_stems, params, tmp_path, jsb16_json):
    out, _, _ = tiny_stems
    p = deep_merge(params, {"stems": {"max_chorales": 1, "renders_per_chorale": 1}})
    build_stems(step_config(p, "stems"), jsb16_json, tmp_path, workers=1)
    a, _ = sf.read(out / "valid" / "c000_r0.flac")
    b, _ = sf.read(tmp_path / "valid" / "c000_r0.flac")
    assert np.array_equal(a, b)


def test_slakh_source_writes_the_same_format(tmp_path, params):
    root = tmp_path / "slakh"
    for split, name in (("train", "Track00001"), ("validation", "Track01501"), ("test", "Track01801")):
        write_track(root, split, name, {"S00": ("Drums", 0.5), "S01": ("Bass", 0.3), "S02": ("Bass", 0.3)},
                    seconds=15.0)
    p = deep_merge(params, {"stems": {"source": "slakh", "slakh_root": str(root)}})
    summary = build_stems(step_config(p, "stems"), None, tmp_path / "out")
    assert summary["source"] == "slakh"
    assert summary["splits"]["train"]["chunks"] == {"drums_bass": 2, "piano_bass": 0, "drums_bass_piano": 0}
    stems, mix = load_chunk(tmp_path / "out" / "train.json", "drums_bass", 1)
    assert np.allclose(mix, (stems["drums"] + stems["bass"]) / 2)
