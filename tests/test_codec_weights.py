"""EnCodec weights: found in each of the three places, checksum enforced, clear errors; and the shapes of
code <-> latent <-> audio with the loaded model."""

import functools
import hashlib
import http.server
import threading

import pytest
import torch

from musicdecomp.codec.weights import find_weights, load_pretrained
from musicdecomp.errors import UserError


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A real (random) EnCodec 24 kHz state dict, named after its own sha256 like the official checkpoints."""
    from encodec import EncodecModel

    torch.manual_seed(0)
    state = EncodecModel.encodec_model_24khz(pretrained=False).state_dict()
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
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights_file.parent))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


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
