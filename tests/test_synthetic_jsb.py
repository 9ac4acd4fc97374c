"""The synthetic JSB files the tests use in place of ../shared: readable by the pipeline, deterministic, and in the
real files' formats (the last checked against the real files where they are present)."""

import json

import synthetic_jsb as synth

from musicdecomp.data.jsb import read_jsb_json
from musicdecomp.data.stems import read_separated


def test_both_files_pass_the_pipelines_checks_and_hold_the_same_chorales(jsb_json, jsb16_json):
    quarter, separated = read_jsb_json(jsb_json), read_separated(jsb16_json)
    assert {s: len(v) for s, v in separated.items()} == synth.N_CHORALES
    for split in synth.SPLITS:
        for q, ch in zip(quarter[split], separated[split], strict=True):
            assert len(ch) == 4 * len(q) and all(-1 <= p <= 127 for st in ch for p in st)
            assert q == [sorted({p for p in ch[t] if p >= 0}) for t in range(0, len(ch), 4)]
    steps = [st for s in synth.SPLITS for ch in quarter[s] for st in ch]
    assert sorted({p for st in steps for p in st}) == synth.OFFICIAL_PITCHES
    assert {len(st) for st in steps} == {0, 1, 2, 3, 4}  # unisons and rests, as in the real file
    # consecutive chorales differ (the stems' splits are disjoint by chorale)
    flat = [json.dumps(ch) for s in synth.SPLITS for ch in separated[s]]
    assert len(set(flat)) == len(flat)


def test_generation_is_deterministic_and_seeded(tmp_path, jsb_json, jsb16_json):
    synth.write(tmp_path / "again")
    assert (tmp_path / "again" / synth.QUARTER).read_bytes() == jsb_json.read_bytes()
    assert (tmp_path / "again" / synth.SEPARATED).read_bytes() == jsb16_json.read_bytes()
    assert synth.chorales(seed=1) != synth.chorales(seed=0)


def test_the_real_files_have_the_formats_imitated(real_jsb):
    quarter = json.loads((real_jsb / synth.QUARTER).read_text())
    separated = json.loads((real_jsb / synth.SEPARATED).read_text())
    assert set(quarter) == set(separated) == set(synth.SPLITS)
    steps = [st for s in synth.SPLITS for ch in quarter[s] for st in ch]
    assert all(st == sorted(set(st)) for st in steps)  # distinct pitches, ascending
    assert {len(st) for st in steps} == {0, 1, 2, 3, 4}
    assert sorted({p for st in steps for p in st}) == synth.OFFICIAL_PITCHES
    voices = [st for s in synth.SPLITS for ch in separated[s] for st in ch]
    assert {len(st) for st in voices} == {4} and {p for st in voices for p in st if p < 0} == {-1}  # -1: a rest
    assert all(len(ch) % 4 == 0 for s in synth.SPLITS for ch in separated[s])  # whole beats
