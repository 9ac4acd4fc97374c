"""Imported at start-up by a Python whose PYTHONPATH names this folder: the packages that the lent GPU machines lack
(their package list: the device tool's KINDS.md; they have torch, numpy, scipy, pandas, matplotlib, PyYAML, tqdm,
rich) cannot be imported, as there. ``tools/gpu/driver.py dry-run`` and tests/test_gpu_script.py run the driver's
``run`` half this way, so a new import of one of them on the training, evaluation or probe path fails here instead of
in a device session."""

import sys
from importlib.abc import MetaPathFinder

ABSENT = {"mlflow", "snakemake", "dvc", "soundfile", "fluidsynth", "encodec", "pretty_midi", "music21", "museval",
          "torchcodec", "sqlalchemy", "alembic", "librosa", "sklearn"}


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        """Fail an import of an absent package. A mere look-up (``importlib.util.find_spec``, as torch's compiler
        makes for the libraries it skips) is answered as if this finder were not there: there, it would find no
        package and import nothing either."""
        if name.partition(".")[0] in ABSENT and _importing():
            raise ModuleNotFoundError(f"No module named {name!r} (the GPU machine has no {name.partition('.')[0]})",
                                      name=name)
        return None


def _importing() -> bool:
    """Whether the look-up comes from an import (an import statement, importlib.import_module), not a find_spec
    query: the caller of importlib's ``_find_spec``, two frames above this finder's."""
    return sys._getframe(3).f_code.co_name == "_find_and_load_unlocked"


sys.meta_path.insert(0, _Absent())
