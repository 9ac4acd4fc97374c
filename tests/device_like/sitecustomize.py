"""Imported at start-up by a Python whose PYTHONPATH names this folder: the packages that the lent GPU machines lack
(their package list: the device tool's KINDS.md; they have torch, numpy, scipy, pandas, matplotlib, PyYAML, tqdm,
rich) cannot be imported, as there. tests/test_gpu_script.py runs the GPU driver's ``run`` half this way, so a new
import of one of them on the training, evaluation or probe path fails a test here instead of a device session."""

import sys
from importlib.abc import MetaPathFinder

ABSENT = {"mlflow", "snakemake", "dvc", "soundfile", "fluidsynth", "encodec", "pretty_midi", "music21", "museval",
          "torchcodec", "sqlalchemy", "alembic"}


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (the GPU machine has no {name.partition('.')[0]})",
                                      name=name)
        return None


sys.meta_path.insert(0, _Absent())
