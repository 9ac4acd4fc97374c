"""FluidSynth note rendering: the protocol's timing, determinism across workers, caching, bad input."""

import numpy as np
import pytest
import torch

from musicdecomp.config import deep_merge
from musicdecomp.data import render
from musicdecomp.data.render import render_lengths, render_notes
from musicdecomp.errors import UserError
from musicdecomp.pipeline import step_config


@pytest.fixture
def chords_csv(tmp_path):
    path = tmp_path / "chords.csv"
    path.write_text("chord,n_notes,split\n60 64 67,3,train\n43 96,2,test\n")
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the note cache lives under results/cache/ of the working folder
    return tmp_path


def cfg_for(params, programs=(0, 40), **render_overrides):
    p = deep_merge(params, {"data": {"render": render_overrides},
                            "datasets": {"a": {"programs": list(programs), "assignments_per_chord": 1, "seed": 0}}})
    p["datasets"] = {"a": p["datasets"]["a"]}
    return step_config(p, "render")


def test_protocol_lengths(params):
    n_pre, n_on, n_total = render_lengths(step_config(params, "render"))
    assert n_pre == 64  # the fluidsynth CLI's player starts the note one block into its file
    assert n_on == 22080  # 0.5 s at 44.1 kHz, on FluidSynth's 64-sample blocks
    assert n_on % 64 == 0 and n_total % 64 == 0
    # after 4000 lead zeros and resampling to 16 kHz, 16,384 samples (32 frames) are covered
    assert (n_total + 4000) * 16000 / 44100 >= 16384
    # a note-on time between blocks takes effect at the next block, as FluidSynth's events do
    assert render_lengths(step_config(deep_merge(params, {"data": {"render": {"note_on_at": 65}}}), "render"))[0] == 128


def test_notes_are_rendered_with_the_protocol(in_tmp, params, chords_csv, soundfont):
    cfg = cfg_for(params)
    info = render_notes(cfg, chords_csv, in_tmp / "notes.pt", workers=1)
    assert info == {"rendered": 10, "cached": 0, "notes": 10}  # 5 pitches x 2 programs
    notes = torch.load(in_tmp / "notes.pt", weights_only=True)
    assert notes["audio"].shape == (10, 16384) and notes["audio"].dtype == torch.float32
    assert notes["pitch"].tolist() == [43, 60, 64, 67, 96] * 2
    assert notes["program"].tolist() == [0] * 5 + [40] * 5
    assert notes["program_names"] == {0: "Yamaha Grand Piano", 40: "Violin"}
    assert notes["sample_rate"] == 16000
    audio = notes["audio"].numpy()
    lead = int(4000 * 16000 / 44100)  # 1451 samples of leading silence at 16 kHz
    assert np.abs(audio[:, : lead - 20]).max() < 1e-4
    assert (np.abs(audio[:, lead + 100: lead + 1000]).max(axis=1) > 1e-3).all()
    # the violin sustains while the key is held (0.5 s) and decays after note-off
    violin = audio[7]
    held = np.sqrt(np.mean(violin[lead + 4000: lead + 7000] ** 2))
    released = np.sqrt(np.mean(violin[-1500:] ** 2))
    assert held > 10 * released


def test_rerun_renders_nothing_and_results_do_not_depend_on_workers(in_tmp, params, chords_csv, soundfont):
    cfg = cfg_for(params)
    render_notes(cfg, chords_csv, in_tmp / "one.pt", workers=1)
    again = render_notes(cfg, chords_csv, in_tmp / "again.pt", workers=2)
    assert again == {"rendered": 0, "cached": 10, "notes": 10}
    # a fresh cache, rendered in parallel and in another order, gives the same waveforms bit for bit
    cache = in_tmp / "results" / "cache" / "render"
    for f in cache.rglob("*.npy"):
        f.unlink()
    rev = in_tmp / "rev.csv"
    rev.write_text("chord,n_notes,split\n43 96,2,train\n60 64 67,3,test\n")
    render_notes(cfg, rev, in_tmp / "two.pt", workers=2)
    one = torch.load(in_tmp / "one.pt", weights_only=True)
    two = torch.load(in_tmp / "two.pt", weights_only=True)
    assert torch.equal(one["audio"], two["audio"])


def test_new_program_renders_only_the_new_notes(in_tmp, params, chords_csv, soundfont):
    render_notes(cfg_for(params, programs=(0,)), chords_csv, in_tmp / "a.pt", workers=1)
    info = render_notes(cfg_for(params, programs=(0, 73)), chords_csv, in_tmp / "b.pt", workers=1)
    assert info == {"rendered": 5, "cached": 5, "notes": 10}
    # a changed render parameter is a different cache: everything is rendered again
    info = render_notes(cfg_for(params, programs=(0,), velocity=64), chords_csv, in_tmp / "c.pt", workers=1)
    assert info["rendered"] == 5


def test_pcm16_is_what_a_16_bit_wav_file_keeps(in_tmp, params, chords_csv, soundfont):
    # floor(x * 2^15) / 2^15, clipped to int16: what libsndfile (<= 1.2.2, clipping on, as FluidSynth's file renderer
    # sets it) writes and torchaudio.load(normalize=True) reads back
    x = np.array([0.0, 1e-6, -1e-6, 1.5 / 32768, -1.5 / 32768, 0.25, 1.0, -1.0, -1.2], dtype=np.float32)
    assert (render.as_pcm16(x) * 32768).tolist() == [0, 0, -1, 1, -2, 8192, 32767, -32768, -32768]
    exact = render_notes(cfg_for(params, pcm16=False), chords_csv, in_tmp / "float.pt", workers=1)
    assert exact["rendered"] == 10  # another render parameter: another cache
    render_notes(cfg_for(params), chords_csv, in_tmp / "pcm.pt", workers=1)
    a = torch.load(in_tmp / "float.pt", weights_only=True)["audio"]
    b = torch.load(in_tmp / "pcm.pt", weights_only=True)["audio"]
    lead = int(4000 * 16000 / 44100)
    diff = (b - a)[:, lead + 50:]
    # quantisation error in [-1, 0) LSB before resampling: a mean of about -1/2 LSB, never much beyond one LSB
    assert diff.abs().max() < 1.5 / 32768 and -0.7 / 32768 < diff.mean() < -0.3 / 32768
    assert torch.equal(b[:, : lead - 50], torch.zeros_like(b[:, : lead - 50]))  # the lead zeros come after


def test_missing_soundfont(in_tmp, params, chords_csv):
    with pytest.raises(UserError, match=r"soundfont /nowhere/x.sf2 does not exist; install it .*data.render.soundfont"):
        render_notes(cfg_for(params, soundfont="/nowhere/x.sf2"), chords_csv, in_tmp / "n.pt")
    assert not (in_tmp / "n.pt").exists()


def test_not_a_soundfont(in_tmp, params, chords_csv):
    (in_tmp / "fake.sf2").write_bytes(b"RIFF0000sfbk" + b"\0" * 100)
    with pytest.raises(UserError, match="FluidSynth cannot load .*fake.sf2"):
        render_notes(cfg_for(params, soundfont=str(in_tmp / "fake.sf2")), chords_csv, in_tmp / "n.pt")


def test_program_the_soundfont_lacks(in_tmp, params, chords_csv, soundfont, monkeypatch):
    # FluidR3_GM has all 128 melodic presets; make program 73 look absent to exercise the check
    real = render.Synth.preset_name
    monkeypatch.setattr(render.Synth, "preset_name", lambda self, p: None if p == 73 else real(self, p))
    with pytest.raises(UserError, match=r"has no preset for GM program\(s\) \[73\] in bank 0"):
        render_notes(cfg_for(params, programs=(0, 73)), chords_csv, in_tmp / "n.pt")


def test_unknown_program_is_a_param_error(params):
    with pytest.raises(UserError, match="programs = \\[0, 130\\] is out of range"):
        cfg_for(params, programs=(0, 130))
