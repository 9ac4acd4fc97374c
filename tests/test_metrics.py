"""Note MSE and mIoU on hand-built cases."""

import numpy as np
import pytest
import torch

from musicdecomp.metrics.notes import cost_matrices, note_metrics, oracle_slot_db


def notes_and_slots():
    """Two notes (disjoint bands, loud = 0 dB, quiet = -80 dB), five slots: the notes in swapped order,
    then three empty slots."""
    floor = -80.0
    a = torch.full((8, 4), floor)
    a[:3] = 0.0
    b = torch.full((8, 4), floor)
    b[4:6] = -10.0
    notes = torch.stack([a, b, torch.full((8, 4), floor), torch.full((8, 4), floor)])[None]  # (1, 4, 8, 4)
    empty = torch.full((8, 4), floor)
    slots = torch.stack([b, empty, a, empty, empty])[None]
    return notes, slots


def test_perfect_decomposition_in_any_slot_order():
    notes, slots = notes_and_slots()
    m = note_metrics(notes, slots, torch.tensor([2]))
    assert m["iou"][0] == pytest.approx(1.0)
    assert m["mse"][0] == pytest.approx(0.0, abs=1e-6)
    assert m["match"][0].tolist() == [2, 0, -1, -1]  # swapped slots are matched back; pads unmatched


def test_empty_slots_do_not_match_and_errors_are_averaged_over_notes():
    notes, slots = notes_and_slots()
    # the second note's slot is now silent: its best match is an empty slot (IoU 0)
    slots[0, 0] = -80.0
    m = note_metrics(notes, slots, torch.tensor([2]))
    assert m["iou"][0] == pytest.approx(0.5)  # (1 + 0) / 2 notes
    b_err = ((notes[0, 1] - (-80.0)) ** 2).mean().item()  # note b against silence
    assert m["mse"][0] == pytest.approx(b_err / 2)
    assert m["note_mse"][0, :2] == pytest.approx([0.0, b_err], abs=1e-6) and np.isnan(m["note_mse"][0, 2:]).all()


def test_per_note_errors_follow_the_optimal_matching_not_the_greedy_one():
    # one-pixel notes 0 and 2.5 dB, slots -1.5 and 1 dB: note 0's cheapest slot is 1 (error 1), but then note 2.5
    # would take slot 0 (16); the optimum gives each 2.25
    notes, slots = torch.tensor([0.0, 2.5]).view(1, 2, 1, 1), torch.tensor([-1.5, 1.0]).view(1, 2, 1, 1)
    m = note_metrics(notes, slots, torch.tensor([2]))
    assert m["match"][0].tolist() == [0, 1]
    assert m["note_mse"][0] == pytest.approx([2.25, 2.25]) and m["mse"][0] == pytest.approx(2.25)


def test_iou_values_and_empty_union():
    gt = torch.full((1, 2, 2, 2), -80.0)
    gt[0, 0, 0, :] = 0.0           # 2 pixels
    slots = torch.full((1, 3, 2, 2), -80.0)
    slots[0, 0, :, 0] = 0.0        # 2 pixels, 1 shared with gt note 0
    mse, iou = cost_matrices(gt, slots, -30.0)
    assert iou[0, 0, 0].item() == pytest.approx(1 / 3)
    assert iou[0, 1, 2].item() == 0.0  # empty note vs empty slot: union 0 -> IoU 0, no division by zero
    assert mse[0, 0, 1].item() == pytest.approx(2 * 80.0 ** 2 / 4)


def test_mse_and_iou_are_matched_separately():
    # one note; slot 0 has the right shape but the wrong level (better IoU), slot 1 the level but a hole
    note = torch.full((1, 1, 4, 4), -80.0)
    note[0, 0, :2] = -20.0
    s0 = note[0, 0].clone()
    s0[:2] = -5.0                  # same mask, 15 dB too loud: MSE 8*225/16 = 112.5
    s1 = note[0, 0].clone()
    s1[0, 0] = -80.0               # one pixel missing: MSE 3600/16 = 225, IoU 7/8
    m = note_metrics(note, torch.stack([s0, s1])[None], torch.tensor([1]))
    assert m["mse"][0] == pytest.approx(112.5)
    assert m["iou"][0] == pytest.approx(1.0)
    assert m["match"][0, 0] == 0


def test_batch_of_examples_with_different_note_counts():
    notes, slots = notes_and_slots()
    notes2 = notes.clone()
    notes2[0, 2] = notes[0, 0] - 5.0  # a third note, not present in any slot... slot 2 is taken
    m = note_metrics(torch.cat([notes, notes2]), torch.cat([slots, slots]), torch.tensor([2, 3]))
    assert m["iou"][0] == pytest.approx(1.0)
    assert m["iou"][1] == pytest.approx(2 / 3)  # the third note's best free slot is empty
    assert np.all(m["match"][1, :3] >= 0) and m["match"][1, 3] == -1


def test_fewer_slots_than_notes_score_the_missed_notes():
    """Two slots, each exactly one note of a three-note chord: the third note is missed, with IoU 0 and its error
    against silence, i.e. the slots' shared floor (the loudest slot's max - 80 dB, here -60 dB), not dropped."""
    a = torch.full((8, 4), -60.0)  # 20 dB max, floor -60
    a[:3] = 20.0
    b = torch.full((8, 4), -60.0)  # 0 dB max, its pixels above the slots' floor
    b[4:6] = 0.0
    c = torch.full((8, 4), -90.0)  # -10 dB max, floor -90
    c[7] = -10.0
    notes = torch.stack([a, b, c])[None]
    m = note_metrics(notes, torch.stack([a, b])[None], torch.tensor([3]))
    missed = ((c - (-60.0)) ** 2).mean().item()  # row 7: 50 dB above silence, the rest 30 dB below it
    assert missed == pytest.approx((4 * 50**2 + 28 * 30**2) / 32)
    assert m["iou"][0] == pytest.approx(2 / 3)
    assert m["mse"][0] == pytest.approx(missed / 3)
    assert m["match"][0].tolist() == [0, 1, -1]
    assert m["note_mse"][0] == pytest.approx([0.0, 0.0, missed], abs=1e-6)
    # the note left unmatched is the one whose miss costs least: with slots for a and c, b is missed
    m = note_metrics(notes, torch.stack([c.clamp(min=-60.0), a])[None], torch.tensor([3]))
    assert m["match"][0].tolist() == [1, -1, 0]
    assert m["note_mse"][0, 1] == pytest.approx(((b - (-60.0)) ** 2).mean().item())
    # without the top_db clamp, silence is amin's -100 dB
    m = note_metrics(notes, torch.stack([a, b])[None], torch.tensor([3]), top_db=None)
    assert m["note_mse"][0, 2] == pytest.approx(((c - (-100.0)) ** 2).mean().item())
    # as many slots as notes, or more, score as before
    for k in (3, 5):
        slots = torch.cat([notes, torch.full((1, k - 3, 8, 4), -60.0)], dim=1)
        m = note_metrics(notes, slots, torch.tensor([3]))
        assert m["iou"][0] == pytest.approx(1.0) and m["mse"][0] == pytest.approx(0.0, abs=1e-6)
        assert m["match"][0].tolist() == [0, 1, 2]


def test_oracle_slots_score_the_metrics_floor():
    """The ground-truth notes as slots: perfect when the notes are equally loud; when one is 30 dB quieter, its
    pixels under the shared slot floor (the loudest note's max - 80 dB) differ from its own floor (max - 80)."""
    loud = torch.full((8, 4), -60.0)  # 20 dB max, its own floor
    loud[:3] = 20.0
    quiet = torch.full((8, 4), -90.0)  # -10 dB max
    quiet[4:6] = -10.0
    quiet[6] = -70.0
    pad = torch.full((8, 4), -100.0)
    notes = torch.stack([loud, quiet, pad])[None]
    valid = torch.tensor([[True, True, False]])
    slots = oracle_slot_db(notes, valid, num_slots=5)
    assert slots.shape == (1, 5, 8, 4)
    assert torch.allclose(slots[0, 0], loud) and (slots[0, 2:] == -60.0).all()  # silent slots at the shared floor
    assert (slots[0, 1, 4:6] == -10.0).all() and (slots[0, 1, 6:] == -60.0).all()  # -70 and -90 lifted to -60
    m = note_metrics(notes, slots, torch.tensor([2]))
    quiet_err = ((quiet - slots[0, 1]) ** 2).mean().item()  # rows 6 (10 dB) and 0-3, 7 (30 dB) of 8
    assert quiet_err == pytest.approx((4 * 10**2 + 5 * 4 * 30**2) / 32)
    assert m["mse"][0] == pytest.approx(quiet_err / 2) and m["iou"][0] == pytest.approx(1.0)
    same = torch.stack([loud, loud.flip(0)])[None]  # equally loud notes: the oracle is exact
    m = note_metrics(same, oracle_slot_db(same, torch.tensor([[True, True]]), 3), torch.tensor([2]))
    assert m["mse"][0] == pytest.approx(0.0, abs=1e-6) and m["iou"][0] == pytest.approx(1.0)
    few = oracle_slot_db(notes, valid, num_slots=2)  # fewer slots than notes: as many slots as notes
    assert few.shape == (1, 3, 8, 4) and torch.equal(few, slots[:, :3])


def test_slot_restart_record_selects_per_chord(monkeypatch):
    """benchmarks/musicslots_slot_restarts.py: per chord, the restart with the best reconstruction (input only) and
    the one with the best note MSE (the ground-truth bound) are chosen independently."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from musicslots_slot_restarts import summarise

    m = {"n": 3, "floor": np.array([1.0, 2.0, 3.0]),
         "mse": np.array([[10.0, 20.0, 30.0], [40.0, 5.0, 30.0]]),   # (restarts, chords)
         "iou": np.array([[0.9, 0.5, 0.7], [0.1, 0.8, 0.7]]),
         "rec": np.array([[1.0, 3.0, 2.0], [2.0, 4.0, 1.0]])}
    s = summarise(m)
    assert s["floor_note_mse"] == pytest.approx(2.0)
    assert [r["note_mse"] for r in s["single_pass"]] == pytest.approx([20.0, 25.0])
    assert s["select_by_recon"]["note_mse"] == pytest.approx((10 + 20 + 30) / 3)   # restarts 0, 0, 1
    assert s["select_by_recon"]["miou"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert s["select_by_note_mse (ground truth: a bound)"]["note_mse"] == pytest.approx((10 + 5 + 30) / 3)
    assert s["per_chord_note_mse_spread"]["median"] == pytest.approx(15.0)
    assert s["share_same_choice_recon_and_note_mse"] == pytest.approx(1 / 3)  # chord 3 ties: the first restart


def test_error_analysis_groups_the_excess_over_the_floor(monkeypatch):
    """benchmarks/musicslots_error_analysis.py: the excess over the floor grouped, with its concentration and the
    sounding slots per chord size."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from musicslots_error_analysis import summarise

    row = dict(notes=2, instrument="Flute", octave_partner=False, same_instrument_partner=True, sounding_slots=3)
    rows = [dict(row, chord=0, midi=60, note_mse=12.0, floor=2.0), dict(row, chord=0, midi=72, note_mse=4.0, floor=2.0),
            dict(row, chord=1, midi=84, instrument="Violin", note_mse=30.0, floor=0.0, sounding_slots=2)]
    s = summarise(rows)
    assert s["all"] == {"notes": 3, "note_mse": pytest.approx(46 / 3), "floor": pytest.approx(4 / 3),
                        "excess": pytest.approx(14.0)}
    assert s["by_instrument"]["Violin"]["excess"] == pytest.approx(30.0)
    assert set(s["by_register"]) == {"G#3-G4", "G#4-G5", "G#5 and up"}  # C4, C5, C6
    assert s["excess_share_of_worst_10pct_notes"] == pytest.approx(30 / 42)
    assert s["notes_with_excess_above_20"] == {"share": pytest.approx(1 / 3), "share_of_excess": pytest.approx(30 / 42)}
    assert s["sounding_slots_per_chord"] == {"2": pytest.approx(2.5)}
