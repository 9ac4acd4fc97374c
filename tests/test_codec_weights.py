"""EnCodec weights: found in each of the three places, checksum enforced, clear errors; and the shapes of
code <-> latent <-> audio with the loaded model."""

import hashlib
import shutil

import pytest
import torch
from conftest import serve_folder

from musicdecomp.errors import UserError
from musicdecomp.models.encodec import build_encodec, load_codec
from musicdecomp.models.encodec_weights import find_weights, load_pretrained, resolve_source
from musicdecomp.pipeline import step_config
from musicdecomp.train.codec import prepare_codec


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A real (random) EnCodec 24 kHz state dict, named after its own sha256 like the official checkpoints."""
    torch.manual_seed(0)
    state = build_encodec().state_dict()
    tmp = tmp_path_factory.mktemp("w") / "weights.th"
    torch.save(state, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    named = tmp.with_name(f"encodec_24khz-{prefix}.th")
    tmp.rename(named)
    return named


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def server(weights_file):
    with serve_folder(weights_file.parent) as url:
        yield url


def test_local_file_first(weights_file, torch_home):
    assert find_weights(str(weights_file), checkpoint=weights_file.name) == weights_file


def test_torch_hub_cache_second(weights_file, torch_home):
    cached = torch_home / "hub" / "checkpoints" / weights_file.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())
    assert find_weights(None, checkpoint=weights_file.name, allow_download=False) == cached


def test_download_third(weights_file, torch_home, server):
    path = find_weights(None, checkpoint=weights_file.name, url=f"{server}/{weights_file.name}")
    assert path == torch_home / "hub" / "checkpoints" / weights_file.name
    assert path.read_bytes() == weights_file.read_bytes()


def test_bad_checksum_is_refused(weights_file, torch_home, tmp_path):
    wrong = tmp_path / "encodec_24khz-d7cc33bc.th"
    wrong.write_bytes(weights_file.read_bytes())  # right content, but not the official file
    with pytest.raises(UserError, match="checksum mismatch for .*expected d7cc33bc"):
        find_weights(str(wrong))
    cached = torch_home / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(UserError, match="checksum mismatch"):
        find_weights(None, allow_download=False)


def test_missing_weights_offline_names_the_place_and_the_alternative(torch_home):
    with pytest.raises(UserError) as err:
        find_weights(None, url="http://127.0.0.1:9/encodec_24khz-d7cc33bc.th")
    msg = str(err.value)
    assert str(torch_home / "hub" / "checkpoints" / "encodec_24khz-d7cc33bc.th") in msg
    assert "codec.source: trained" in msg
    with pytest.raises(UserError, match="codec.weights: /nowhere.th does not exist"):
        find_weights("/nowhere.th")


def test_codes_latents_audio_shapes(weights_file, tmp_path):
    model = load_pretrained(weights_file, bandwidth=24.0)
    x = torch.randn(1, 1, 7 * 24000) * 0.1
    with torch.no_grad():
        codes, _ = model._encode_frame(x)
        assert codes.shape == (1, 32, 525) and codes.dtype == torch.int64
        latent = model.quantizer.decode(codes.transpose(0, 1))
        assert latent.shape == (1, 128, 525)
        audio = model.decoder(latent[..., :512])
    assert audio.shape == (1, 1, 512 * 320)
    (tmp_path / "junk.th").write_bytes(b"junk")
    with pytest.raises(UserError, match="is not an EnCodec 24 kHz state dict"):
        load_pretrained(tmp_path / "junk.th")


def test_auto_with_a_weights_path_that_does_not_exist_is_an_error(weights_file, torch_home, tmp_path, params):
    """codec.source auto with codec.weights set: the weights there mean pretrained, a wrong path is an error (not a
    silent fallback to training a codec), even when the hub cache holds the weights."""
    codec = {**params["codec"], "source": "auto", "url": f"http://127.0.0.1:9/{weights_file.name}"}
    assert resolve_source({**codec, "weights": str(weights_file)}) == "pretrained"
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(weights_file, cache / weights_file.name)
    missing = tmp_path / "typo" / weights_file.name
    with pytest.raises(UserError) as err:
        resolve_source({**codec, "weights": str(missing)})
    msg = str(err.value)
    assert msg.startswith(f"codec.weights: {missing} does not exist; fix the path") and "\n" not in msg
    assert "set codec.weights to null" in msg
    assert resolve_source({**codec, "weights": None}) == "pretrained"  # the hub cache, as the message says
    assert resolve_source({**codec, "source": "trained", "weights": str(missing)}) == "trained"  # not auto: as given


def test_codec_step_uses_pretrained_weights_where_present(weights_file, torch_home, tmp_path, params):
    """codec.source auto: trained while no weights are on the machine, pretrained once the hub cache holds them;
    the codec step then writes model.pt with exactly those weights."""
    codec = {**params["codec"], "url": f"http://127.0.0.1:9/{weights_file.name}"}
    p = {**params, "codec": codec}
    assert step_config(p, "codec")["source"] == "trained"
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(weights_file, cache / weights_file.name)
    cfg = step_config(p, "codec")
    assert cfg == {"source": "pretrained", "bandwidth": 24.0, "weights": None, "url": codec["url"]}
    info = prepare_codec(cfg, tmp_path / "no-stems-needed", tmp_path / "codec")
    assert info["origin"] == str(cache / weights_file.name) and info["n_q"] == 32
    model, loaded = load_codec(tmp_path / "codec" / "model.pt")
    state = torch.load(weights_file, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert loaded["sha256"].startswith(weights_file.name.split("-")[1][:8])
    # a local file given in params wins, and a wrong one is refused by its checksum
    (tmp_path / "other.th").write_bytes(b"x" * 100)
    with pytest.raises(UserError, match="sha256"):
        prepare_codec({**cfg, "weights": str(tmp_path / "other.th")}, tmp_path, tmp_path / "codec2")
    assert not (tmp_path / "codec2" / "model.pt").exists()
    # source: pretrained with no weights and no network: the one-line error naming the offline alternative
    shutil.rmtree(cache)
    with pytest.raises(UserError, match="codec.source: trained"):
        prepare_codec({**cfg, "source": "pretrained"}, tmp_path, tmp_path / "codec3")
