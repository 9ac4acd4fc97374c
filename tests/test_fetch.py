"""Fetching the JSB JSON: explicit path, local folders, download (served from loopback), checksums, errors."""

import hashlib

import pytest
from conftest import serve_folder

from musicdecomp.data import jsb
from musicdecomp.data.jsb import fetch_jsb, read_jsb_json
from musicdecomp.errors import UserError

SMALL = b'{"train": [[[60, 64, 67]]], "valid": [[[62, 65]]], "test": [[[59, 62, 67]]]}'


def source(tmp_path, **kw):
    cfg = {"json_path": None, "local_dirs": [], "filename": "jsb.json", "url": "http://127.0.0.1:9/none",
           "sha256": hashlib.sha256(SMALL).hexdigest()}
    cfg.update(kw)
    return {"data.jsb.source": cfg}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "jsb.json").write_bytes(SMALL)
    with serve_folder(root) as url:
        yield url


def test_explicit_path_is_checked_and_copied(in_tmp):
    (in_tmp / "mine.json").write_bytes(SMALL)
    info = fetch_jsb(source(in_tmp, json_path="mine.json"), in_tmp / "out" / "jsb.json")
    assert (in_tmp / "out" / "jsb.json").read_bytes() == SMALL
    assert info["sha256"] == hashlib.sha256(SMALL).hexdigest()


def test_local_dirs_are_searched_in_order(in_tmp):
    for d, content in (("a", SMALL), ("b", b"{}")):
        (in_tmp / d).mkdir()
        (in_tmp / d / "jsb.json").write_bytes(content)
    info = fetch_jsb(source(in_tmp, local_dirs=["missing", "a", "b"]), in_tmp / "out.json")
    assert info["source"] == "a/jsb.json"


def test_download_when_nothing_is_local(in_tmp, server):
    info = fetch_jsb(source(in_tmp, url=f"{server}/jsb.json"), in_tmp / "out.json")
    assert info["source"] == str(jsb.DOWNLOAD_DIR / "jsb.json")
    assert (in_tmp / "resources" / "jsb" / "jsb.json").read_bytes() == SMALL  # kept for the next run
    assert read_jsb_json(in_tmp / "out.json")["valid"] == [[[62, 65]]]


def test_checksum_mismatch_is_refused(in_tmp, server):
    cfg = source(in_tmp, url=f"{server}/jsb.json", sha256="0" * 64)
    with pytest.raises(UserError, match=r"checksum mismatch for resources/jsb/jsb.json: .*sha256: null"):
        fetch_jsb(cfg, in_tmp / "out.json")
    assert not (in_tmp / "out.json").exists()
    # null accepts the file on purpose
    fetch_jsb(source(in_tmp, url=f"{server}/jsb.json", sha256=None), in_tmp / "out.json")
    assert (in_tmp / "out.json").exists()


def test_no_network_says_where_to_put_the_file(in_tmp):
    with pytest.raises(UserError, match=r"cannot download http://127.0.0.1:9/none .*resources/jsb/jsb.json"):
        fetch_jsb(source(in_tmp), in_tmp / "out.json")
    assert not (in_tmp / "out.json").exists()
    assert not list((in_tmp / "resources" / "jsb").glob("*"))  # no partial download left behind


def test_missing_explicit_path(in_tmp):
    with pytest.raises(UserError, match=r"json_path: nowhere.json does not exist"):
        fetch_jsb(source(in_tmp, json_path="nowhere.json"), in_tmp / "out.json")


@pytest.mark.parametrize("content, words", [
    (b'{"train": [[[60, 64]]', "is not valid JSON"),
    (b'\xff\xfe{"train"', "bad.json cannot be read"),
    (b'{"train": [], "valid": []}', "does not hold the JSB splits"),
    (b'{"train": [[["C4"]]], "valid": [], "test": []}', "split 'train' is not a list of chorales"),
])
def test_corrupt_json_is_refused(in_tmp, content, words):
    (in_tmp / "bad.json").write_bytes(content)
    with pytest.raises(UserError, match=words):
        fetch_jsb(source(in_tmp, json_path="bad.json", sha256=None), in_tmp / "out.json")
    assert not (in_tmp / "out.json").exists()


def test_unwritable_output(in_tmp):
    (in_tmp / "mine.json").write_bytes(SMALL)
    (in_tmp / "results").write_text("a file where a folder should be")
    with pytest.raises(UserError, match=r"cannot create the folder for results/data/jsb.json"):
        fetch_jsb(source(in_tmp, json_path="mine.json"), "results/data/jsb.json")
