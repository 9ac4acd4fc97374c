"""Our rendered notes against the official generator's way of rendering them (music21 writes a MIDI file, the
``fluidsynth`` command line renders it: ``fluidsynth -ni <sf2> <mid> -F <wav> -r 44100 -q``), note by note, as
dB mel spectrograms, and the metrics' floor on the test split with either as the ground truth.

    apt-get install --no-install-recommends fluidsynth   # the command line (setup.sh installs only the library)
    python benchmarks/render_vs_official.py --notes results/data/notes/notes.pt --data-dir results/data/jsb_multi

The official generator stacks the waveforms of a chord's notes (``torch.cat``), which needs every note to have the
same length. From FluidSynth 2.3.1 on the command line keeps rendering until no voice sounds, so the length depends
on the note (recorded here as ``cli_seconds``); before 2.3.1 it stopped at the MIDI file's end of track, which
music21 writes one quarter note after the note-off, the same for every note. Either way the 32 frames of the crop
(1.024 s with the lead zeros) end before that point, so both versions give the same cropped spectrograms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from musicdecomp.data.mel import MelFeatures
from musicdecomp.data.official_render import cli_version, midi_file, render_cli
from musicdecomp.data.render import _render_one, as_pcm16, render_lengths, to_target_rate
from musicdecomp.metrics.notes import note_metrics, oracle_slot_db


def scores(bank_db: torch.Tensor, split: dict, num_slots: int, mask_db: float, slots_db=None) -> dict:
    """Per-example note MSE and IoU of the test split's ground truth (``bank_db``) against ``slots_db`` (a bank in the
    same order, each note in its own dB), or against the ground-truth notes themselves as slots (the floor)."""
    idx = split["note_index"].long()
    notes = bank_db[idx.clamp(min=0)]
    slots = oracle_slot_db(notes, idx >= 0, num_slots) if slots_db is None else slots_db[idx.clamp(min=0)]
    return note_metrics(notes, slots, split["n_notes"].long(), mask_db)


def summarise(res: dict, keep: np.ndarray) -> dict:
    return {"note_mse": float(res["mse"].mean()), "miou": float(res["iou"].mean()),
            "note_mse_without_inaudible": float(res["mse"][keep].mean()),
            "miou_without_inaudible": float(res["iou"][keep].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notes", default="results/data/notes/notes.pt")
    p.add_argument("--data-dir", default="results/data/jsb_multi", help="a features folder: its test split's floor")
    p.add_argument("--mel-params", default="params.yaml")
    p.add_argument("--num-slots", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).with_name("render_vs_official_jsb.json")))
    args = p.parse_args()
    version = cli_version()
    if version is None:
        raise SystemExit("no fluidsynth command line: apt-get install --no-install-recommends fluidsynth")
    import music21
    import yaml

    notes = torch.load(args.notes, weights_only=False)
    render = notes["render"]
    mel = yaml.safe_load(Path(args.mel_params).read_text())["data"]["mel"]
    features = MelFeatures(mel, render["sample_rate"])

    rows, cli_audio = [], []
    lengths = render_lengths({"data.render": {"note_on_at": 0, **render}})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (pitch, program) in enumerate(zip(notes["pitch"].tolist(), notes["program"].tolist())):
            mid, wav = Path(tmp) / f"{i}.mid", Path(tmp) / f"{i}.wav"
            end = midi_file(mid, pitch, program, render["velocity"], render["bpm"], render["quarter_lengths"])
            audio = render_cli(render["soundfont"], mid, wav, render["synth_rate"])
            cli_audio.append(torch.from_numpy(to_target_rate(audio[None, :, 0], {"data.render": render})[0]))
            # our synth-rate render of the same note, as the render step makes it before the lead zeros
            ours = _render_one((render["soundfont"], render, pitch, program, *lengths))[2]
            ours = as_pcm16(ours) if render.get("pcm16") else ours
            lsb = np.abs(ours - audio[: len(ours), 0]) * 32768
            rows.append({"pitch": pitch, "program": program, "end_of_track_s": end,
                         "cli_seconds": len(audio) / render["synth_rate"],
                         "synth_rate_identical": bool(lsb.max() == 0), "synth_rate_max_diff_lsb": float(lsb.max())})
    seconds = time.perf_counter() - t0
    ours_db = features.db(notes["audio"])
    cli_db = features.db(torch.stack(cli_audio))
    crop_end = (mel["n_frames"] - 1) * mel["hop_length"] + mel["n_fft"] // 2
    for r, a, b, wa, wb in zip(rows, ours_db, cli_db, notes["audio"], cli_audio):
        ma, mb = a >= mel["mask_db"], b >= mel["mask_db"]
        loud = ma | mb
        union = loud.sum()
        r.update({"peak_db_ours": float(a.max()), "peak_db_cli": float(b.max()),
                  "mse_db2": float(((a - b) ** 2).mean()),
                  "mean_abs_db_loud": float((a - b)[loud].abs().mean()) if loud.any() else None,
                  "mask_iou": float((ma & mb).sum() / union) if union > 0 else None,
                  "waveform_rel_error": float((wa - wb).norm() / wb.norm()) if wb.norm() > 0 else None})

    def stats(key, subset=rows):
        v = np.array([r[key] for r in subset if r[key] is not None])
        return {"mean": float(v.mean()), "max": float(v.max()), "min": float(v.min())}

    by_program = {}
    for g in sorted({r["program"] for r in rows}):
        sub = [r for r in rows if r["program"] == g]
        by_program[notes["program_names"][g]] = {
            "notes": len(sub), "cli_seconds": stats("cli_seconds", sub), "mse_db2": stats("mse_db2", sub),
            "mean_abs_db_loud": stats("mean_abs_db_loud", sub), "mask_iou": stats("mask_iou", sub)}
    record = {
        "what": "our notes (pyfluidsynth, results/data/notes/notes.pt) against the official generator's rendering "
                "(music21 MIDI + fluidsynth -ni <sf2> <mid> -F <wav> -r 44100 -q), both with 4,000 lead zeros, "
                "resampled to 16 kHz, channel 0, dB mel cropped to 32 frames",
        "fluidsynth_cli": version, "music21": music21.__version__, "soundfont": render["soundfont"],
        "soundfont_sha256": notes["soundfont_sha256"], "render": render, "notes": len(rows),
        "end_of_track_s": sorted({round(r["end_of_track_s"], 6) for r in rows}),
        "crop_ends_s_after_note_on": (crop_end / render["sample_rate"]) - render["lead_zeros"] / render["synth_rate"],
        "cli_seconds": stats("cli_seconds"), "distinct_cli_lengths": len({r["cli_seconds"] for r in rows}),
        "synth_rate_identical_notes": sum(r["synth_rate_identical"] for r in rows),
        "synth_rate_max_diff_lsb": stats("synth_rate_max_diff_lsb"),
        "per_note_mse_db2": stats("mse_db2"), "per_note_mean_abs_db_loud": stats("mean_abs_db_loud"),
        "per_note_mask_iou": stats("mask_iou"), "waveform_rel_error": stats("waveform_rel_error"),
        "by_program": by_program, "cpu_seconds": seconds, "date": time.strftime("%Y-%m-%d"), "per_note": rows}
    if args.data_dir:
        split = torch.load(Path(args.data_dir) / "test.pt", weights_only=True)
        where = {(p, g): i for i, (p, g) in enumerate(zip(notes["pitch"].tolist(), notes["program"].tolist()))}
        order = [where[(p, g)] for p, g in zip(split["bank_pitch"].tolist(), split["bank_program"].tolist())]
        bank_ours, bank_cli = ours_db[order], cli_db[order]
        if not torch.allclose(bank_ours, split["bank_db"].float(), atol=1e-3):
            raise SystemExit(f"{args.notes} is not the notes {args.data_dir} was built from")
        silent = [i for i in range(len(order)) if not (bank_ours[i] >= mel["mask_db"]).any()]
        idx = split["note_index"].long()
        keep = ~np.isin(idx.numpy(), silent).any(axis=1)
        record["test_split"] = {
            "data_dir": args.data_dir, "examples": int(len(keep)),
            "inaudible_notes": [[int(split["bank_pitch"][i]), int(split["bank_program"][i])] for i in silent],
            "examples_without_inaudible": int(keep.sum()),
            "floor_ours": summarise(scores(bank_ours, split, args.num_slots, mel["mask_db"]), keep),
            "floor_cli": summarise(scores(bank_cli, split, args.num_slots, mel["mask_db"]), keep),
            "cli_notes_as_slots_against_ours": summarise(
                scores(bank_ours, split, args.num_slots, mel["mask_db"], bank_cli), keep)}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "per_note"}, indent=1))


if __name__ == "__main__":
    main()
