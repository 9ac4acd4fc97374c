"""File helpers: their errors are one line that names the file, what went wrong and the fix."""

import pytest
import torch

from musicdecomp.errors import UserError
from musicdecomp.io import load_torch


def test_an_unreadable_torch_file_says_why_in_one_line(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"garbage, not a checkpoint\nsecond line")
    with pytest.raises(UserError) as err:
        load_torch(bad, "a readable checkpoint", "train the run first", "train the run again")
    msg = str(err.value)
    assert "\n" not in msg
    # the error's type and its own line (not torch's advice to load the file without weights_only)
    assert msg == f"{bad} is not a readable checkpoint (UnpicklingError: Unsupported operand 103); train the run again"
    torch.save({"a": torch.zeros(2)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:100])
    with pytest.raises(UserError, match=r"truncated.pt is not a readable checkpoint \(\w+: .+\); train the run again$"):
        load_torch(truncated, "a readable checkpoint", "train the run first", "train the run again")
    with pytest.raises(UserError, match=r"nowhere.pt does not exist; train the run first$"):
        load_torch(tmp_path / "nowhere.pt", "a readable checkpoint", "train the run first", "train the run again")
