"""How close the audio of ``eval/listen.py`` comes to the spectrograms it is rebuilt from: for the first N test
chords of a dataset, mel spectrogram -> (inverse filterbank + Griffin-Lim) -> audio -> mel spectrogram again, and
the mean absolute dB error over each chord's loudest 40 dB (and over all pixels).

    python benchmarks/mel_inversion.py --data-dir results/data/jsb_multi --n 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from musicdecomp.data.mel import MelFeatures
from musicdecomp.eval.listen import MelInverter, dataset_audio_settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="results/data/jsb_multi")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).with_name("mel_inversion_jsb_multi.json")))
    args = p.parse_args()

    mel, rate = dataset_audio_settings(args.data_dir)
    chords = torch.load(Path(args.data_dir) / "test.pt", weights_only=True)["chord_db"][: args.n].float()
    inverter, features = MelInverter(mel, rate), MelFeatures(mel, rate)
    t0 = time.perf_counter()
    back = torch.cat([features.db(inverter(c)) for c in chords.split(50)])
    seconds = time.perf_counter() - t0
    err = (back - chords).abs()
    loud = chords > chords.amax((-2, -1), keepdim=True) - 40
    per_chord_loud = torch.stack([e[m].mean() for e, m in zip(err, loud)])
    record = {"dataset": Path(args.data_dir).name, "chords": len(chords), "method": "InverseMelScale + GriffinLim "
              "(64 iterations, momentum 0.99, fixed initial phase)", "mel": mel, "sample_rate": rate,
              "mean_abs_db_error_loudest_40db": float(per_chord_loud.mean()),
              "mean_abs_db_error_loudest_40db_p90": float(per_chord_loud.quantile(0.9)),
              "mean_abs_db_error_all_pixels": float(err.mean()),
              "cpu_seconds_per_spectrogram": seconds / len(chords), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
