"""The published numbers beside ours come from one cited file, eval/paper_numbers.yaml, not from the table code."""

import json

import pytest
import yaml

from musicdecomp.errors import UserError
from musicdecomp.eval import tables
from musicdecomp.eval.tables import paper_numbers, table1


def one_evaluation(tmp_path):
    path = tmp_path / "ev.json"
    path.write_text(json.dumps({"dataset": "jsb_multi", "variant": "none-t1-imp_true-k7", "seed": 0, "best_step": 10,
                                "model": {"mask": "none", "time_stride": 1, "implicit": True, "num_slots": 7,
                                          "iters": 3}, "test": {"note_mse": 10.0, "miou": 0.9}}))
    return [path]


def test_the_paper_numbers_are_cited_with_their_caveat():
    numbers = yaml.safe_load(tables.PAPER_NUMBERS.read_text())
    assert {"musicslots", "composable"} <= set(numbers)  # one top-level key per paper
    ms = paper_numbers("musicslots")
    assert "shared/seeds/musicslots-summary.txt" in ms["source"]
    assert "summary" in ms["caveat"] and "LCM/TR" in ms["caveat"] and "unverified" in ms["caveat"]
    assert (ms["table1"]["note_mse"], ms["table1"]["miou"], ms["table1"]["num_slots"]) == (13.47, 0.91, 7)
    comp = paper_numbers("composable")
    assert comp["table2"]["rows"]["hpss"] == {"method": "HPSS", "si_sdr": [2.3, 4.8], "si_sir": [9.9, 7.5],
                                              "si_sar": [5.1, 4.6]}
    assert comp["table3"]["rows"]["mean"] == {"mse": [1.87020, 0.13183], "ms_stft": [3.6, 0.1]}
    assert comp["table1"]["ms_stft"] == 4.7 and "Slakh2100" in comp["caveat"]
    with pytest.raises(UserError, match=r"paper_numbers.yaml has no paper 'nope'.*musicslots"):
        paper_numbers("nope")


def test_table1_shows_the_numbers_of_the_file(tmp_path, monkeypatch):
    table1(one_evaluation(tmp_path), tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    assert "| paper (JSB, best variant; reported, unverified) | | | | 7 | | 13.47 | 0.91 |" in (
        tmp_path / "t.md").read_text()  # as before the numbers moved to the file
    assert (tmp_path / "t.csv").read_text().splitlines()[-1] == "paper (reported; unverified),best,,,,7,,13.47,,0.91,,,,paper"
    other = yaml.safe_load(tables.PAPER_NUMBERS.read_text())
    other["musicslots"]["table1"].update(note_mse=12.34, miou=0.87)
    (tmp_path / "numbers.yaml").write_text(yaml.safe_dump(other))
    monkeypatch.setattr(tables, "PAPER_NUMBERS", tmp_path / "numbers.yaml")
    table1(one_evaluation(tmp_path), tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    md, tex = (tmp_path / "t.md").read_text(), (tmp_path / "t.tex").read_text()
    assert "| 12.34 | 0.87 |" in md and "13.47" not in md
    assert "$12.34$ & $0.87$" in tex and "13.47" not in tex
    assert (tmp_path / "t.csv").read_text().splitlines()[-1] == "paper (reported; unverified),best,,,,7,,12.34,,0.87,,,,paper"
