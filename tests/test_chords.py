"""The chords step: the official protocol (pooling, seeded split, cap) on synthetic chorales, and its counts,
splits and pitch classes on the real JSB JSON (the real_data tests, which skip without ../shared)."""

import csv
import json
from collections import Counter

import pytest
from synthetic_jsb import OFFICIAL_PITCHES, QUARTER, SEPARATED

from musicdecomp.data.datasets import expected_counts, sample_assignments
from musicdecomp.data.jsb import build_chords, pool_chords, read_chords, read_jsb_json
from musicdecomp.data.stems import read_separated
from musicdecomp.pipeline import step_config


def chords_of(tmp_path_factory, json_path, params):
    out = tmp_path_factory.mktemp("chords")
    summary = build_chords(step_config(params, "chords"), json_path, out / "chords.csv", out / "summary.json")
    return out, summary


@pytest.fixture(scope="module")
def full_chords(tmp_path_factory, real_jsb, params):
    return chords_of(tmp_path_factory, real_jsb / QUARTER, params)


@pytest.fixture(scope="module")
def synthetic_chords(tmp_path_factory, jsb_json, params):
    return chords_of(tmp_path_factory, jsb_json, params)


def test_counts_match_the_official_generator(full_chords):
    out, summary = full_chords
    assert summary["n_pooled_chords"] == 3131
    assert summary["splits"] == {"train": 2191, "valid": 626, "test": 314}
    assert summary["chords_by_n_notes"] == {"2": 12, "3": 398, "4": 2721}
    assert summary["n_time_steps"] == 13807 + 4602 + 4725
    assert summary["pitches"] == [43, 45, 46] + list(range(48, 97))  # the official note_list, 52 classes
    assert json.loads((out / "summary.json").read_text()) == summary


def read_rows(out):
    with open(out / "chords.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_table_columns_and_disjoint_splits(synthetic_chords, jsb_json):
    out, summary = synthetic_chords
    rows = read_rows(out)
    assert list(rows[0]) == ["chord", "n_notes", "split"]
    counts = Counter(r["split"] for r in rows)
    assert counts == summary["splits"] and len(rows) == summary["n_pooled_chords"] > 300
    for s, f in zip(("train", "valid", "test"), [0.7, 0.2, 0.1]):
        assert abs(counts[s] - f * len(rows)) < 2  # the 70/20/10 cut
    for r in rows:
        notes = [int(p) for p in r["chord"].split()]
        assert notes == sorted(notes) and int(r["n_notes"]) == len(notes) >= 2
        assert len(set(notes)) == len(notes) <= 4
    by_split = {s: {r["chord"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    assert sum(len(v) for v in by_split.values()) == len(rows)  # no chord twice within a split
    assert not (by_split["train"] & by_split["valid"] or by_split["train"] & by_split["test"]
                or by_split["valid"] & by_split["test"])
    # every distinct time step of 2 or more notes of every original split, once, and nothing else
    data = read_jsb_json(jsb_json)
    steps = {" ".join(map(str, step)) for s in data for ch in data[s] for step in ch if len(step) >= 2}
    assert {r["chord"] for r in rows} == steps
    assert summary["n_time_steps"] == sum(len(ch) for s in data for ch in data[s])
    assert summary["pitches"] == OFFICIAL_PITCHES  # the synthetic chorales hold the real data's pitch classes


def test_real_splits_and_held_out_pitches(full_chords):
    out, _ = full_chords
    rows = read_rows(out)
    assert Counter(r["split"] for r in rows) == {"train": 2191, "valid": 626, "test": 314}
    by_split = {s: {r["chord"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    # every pitch of the held-out splits is seen in training (only the combinations are new)
    train_pitches = {p for c in by_split["train"] for p in c.split()}
    assert {p for s in ("valid", "test") for c in by_split[s] for p in c.split()} <= train_pitches


def test_split_is_deterministic_and_seeded(tmp_path, jsb_json, params, synthetic_chords):
    out, _ = synthetic_chords
    build_chords(step_config(params, "chords"), jsb_json, tmp_path / "a.csv", tmp_path / "a.json")
    assert (tmp_path / "a.csv").read_bytes() == (out / "chords.csv").read_bytes()
    other = step_config({**params, "data": {**params["data"], "jsb": {**params["data"]["jsb"], "chords": {
        **params["data"]["jsb"]["chords"], "seed": 7}}}}, "chords")
    build_chords(other, jsb_json, tmp_path / "b.csv", tmp_path / "b.json")
    assert read_chords(tmp_path / "b.csv") != read_chords(out / "chords.csv")
    assert sorted(read_chords(tmp_path / "b.csv")) != sorted(read_chords(out / "chords.csv"))


def test_pooling_pads_left_and_deduplicates_across_original_splits():
    data = {"train": [[[60, 64, 67], [60, 64, 67], [62]]], "valid": [[[60, 64, 67], [55, 59, 62, 67]]],
            "test": [[[]]]}
    assert pool_chords(data, 4, 2) == [(0, 60, 64, 67), (55, 59, 62, 67)]
    assert pool_chords(data, 4, 1) == [(0, 0, 0, 62), (0, 60, 64, 67), (55, 59, 62, 67)]


def test_max_chords_caps_after_shuffling(tmp_path, jsb_json, params, synthetic_chords):
    out, _ = synthetic_chords
    cfg = step_config(params, "chords")
    cfg["data.jsb.chords"] = {**cfg["data.jsb.chords"], "max_chords": 30}
    summary = build_chords(cfg, jsb_json, tmp_path / "t.csv", tmp_path / "t.json")
    # np.cumsum([0.7, 0.2, 0.1]) * 30 = [21, 26.99.., 30]: the official int() cut gives 21 / 5 / 4
    assert summary["splits"] == {"train": 21, "valid": 5, "test": 4}
    capped = read_chords(tmp_path / "t.csv")
    assert summary["n_pitches"] == 52 > len({p for c, _ in capped for p in c})  # pitch classes from the whole pool
    # the first 30 chords of the same shuffle: the uncapped table's first 30 training chords
    full = read_chords(out / "chords.csv")
    assert [c for c, _ in capped] == [c for c, s in full if s == "train"][:30]


def check_sampling(chords, counts):
    picks = sample_assignments(chords, [0, 40, 73], 9, 42)
    assert {s: len(v) for s, v in picks.items()} == counts
    per_chord = Counter((s, row) for s, v in picks.items() for row, _ in v)
    for (s, row), n in per_chord.items():
        chord = [c for c, split in chords if split == s][row]
        assert n == min(9, 3 ** len(chord))
    # without replacement: no chord gets the same assignment twice (and 2-note chords get all 9, above)
    for v in picks.values():
        assert len(set(v)) == len(v)
    assert sample_assignments(chords, [0, 40, 73], 9, 42) == picks
    assert sample_assignments(chords, [0, 40, 73], 9, 1) != picks


def test_multi_instrument_sampling(synthetic_chords):
    out, summary = synthetic_chords
    chords = read_chords(out / "chords.csv")
    counts = expected_counts(chords, 3, 9)
    assert {s: sum(min(9, 3 ** len(c)) for c, split in chords if split == s) for s in counts} == counts
    assert expected_counts(chords, 1, 1) == summary["splits"]
    check_sampling(chords, counts)


def test_multi_instrument_counts(full_chords):
    out, _ = full_chords
    chords = read_chords(out / "chords.csv")
    assert expected_counts(chords, 3, 9) == {"train": 19719, "valid": 5634, "test": 2826}
    assert expected_counts(chords, 1, 1) == {"train": 2191, "valid": 626, "test": 314}
    check_sampling(chords, {"train": 19719, "valid": 5634, "test": 2826})


def test_reads_the_json_it_validates(real_jsb):
    data = read_jsb_json(real_jsb / QUARTER)
    assert [len(data[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    separated = read_separated(real_jsb / SEPARATED)
    assert [len(separated[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
