"""VGGish path: the torch port's exact state-dict layout, the log-mel front end, loading local weights through
SISYPHUS_VGGISH_WEIGHTS and `sisyphus audio build` storing 128-d vectors every 0.96 s.

No real VGGish weights are available here, so only shapes, keys and loading are checked, with a randomly
initialised network saved to disk; the quality of real VGGish embeddings is not verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from conftest import CliRunner

from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.errors import ModelError
from sisyphus_db.temporal import vggish
from sisyphus_db.temporal.audio_store import sound_method
from sisyphus_db.temporal.synthetic_av import tone_track, write_av_clip

# harritaylor/torchvggish VGG: features (conv/relu/pool indices) and embeddings, as in vggish-10086976.pth.
PORT_SHAPES = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(vggish.VGGish().state_dict(), path)
    return path


def test_network_has_the_ports_keys_shapes_and_channels_last_flattening() -> None:
    model = vggish.VGGish()
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == PORT_SHAPES
    x = torch.randn(2, 1, 96, 64)
    with torch.inference_mode():
        out = model(x)
        maps = model.features(x)  # (2, 512, 6, 4): flattened as (6, 4, 512) like the port
        flat = maps.permute(0, 2, 3, 1).reshape(2, -1)
        assert maps.shape == (2, 512, 6, 4)
        torch.testing.assert_close(out, model.embeddings(flat))
    assert out.shape == (2, 128)


def test_front_end_gives_96_by_64_examples_per_0_96_seconds() -> None:
    samples = tone_track(3.0, [(0.0, 3.0, 440.0)])
    ex = vggish.examples(samples)
    # 3 s -> 1 + (48000 - 400) // 160 = 298 frames -> 3 whole examples of 96 frames
    assert ex.shape == (3, 96, 64) and ex.dtype == np.float32
    assert vggish.examples(samples[: 15_000]).shape == (0, 96, 64)  # under 96 frames: none
    # a 440 Hz tone peaks in the mel band around 440 Hz, far above the noise floor log(0.01)
    peak = int(ex[0].mean(axis=0).argmax())
    edges = 700.0 * np.expm1(np.linspace(vggish._hz_to_mel(125.0), vggish._hz_to_mel(7500.0), 66) / 1127.0)
    assert edges[peak] < 440.0 < edges[peak + 2]
    # 44.1 kHz stereo input is resampled to 16 kHz mono first: same number of examples, same spectrum
    t = np.arange(round(3.0 * 44_100)) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440.0 * t)] * 2, axis=1)
    resampled = vggish.examples(stereo, 44_100)
    assert resampled.shape == (3, 96, 64) and int(resampled[0].mean(axis=0).argmax()) == peak


def test_weights_load_through_the_variable_and_embed_every_0_96_s(
        random_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vggish.WEIGHTS_ENV, str(random_weights))
    chosen = sound_method("auto")
    assert (chosen.name, chosen.step) == ("vggish", pytest.approx(0.96))
    seconds = chosen.embed(tone_track(4.0, [(0.0, 4.0, 440.0)]))
    assert seconds.vectors.shape == (4, 128)
    np.testing.assert_allclose(seconds.starts, [0.0, 0.96, 1.92, 2.88])
    np.testing.assert_allclose(np.linalg.norm(seconds.vectors, axis=1), 1.0, atol=1e-5)
    assert sound_method("logmel").name == "logmel-v1"
    monkeypatch.delenv(vggish.WEIGHTS_ENV)
    assert sound_method("auto").name == "logmel-v1"
    with pytest.raises(ModelError, match="--method vggish needs SISYPHUS_VGGISH_WEIGHTS"):
        sound_method("vggish")


def test_bad_weights_are_one_clear_line(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ModelError) as caught:
        vggish.load_vggish(wrong)
    message = str(caught.value)
    assert "\n" not in message and "not VGGish weights" in message and "first features.0.weight" in message
    shaped = tmp_path / "shaped.pth"
    state = {key: torch.zeros(shape) for key, shape in PORT_SHAPES.items()}
    state["embeddings.4.weight"] = torch.zeros(64, 4096)
    torch.save(state, shaped)
    with pytest.raises(ModelError, match=r"embeddings.4.weight has shape \(64, 4096\), expected \(128, 4096\)"):
        vggish.load_vggish(shaped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable torch state dict"):
        vggish.load_vggish(garbage)
    with pytest.raises(ModelError, match="no such file"):
        vggish.load_vggish(tmp_path / "absent.pth")


@pytest.mark.slow
def test_audio_build_stores_vggish_rows(cli: CliRunner, fresh_database_url: str, tmp_path: Path,
                                        random_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "videos"
    write_av_clip(folder / "tone.mp4", 3.0, [(0.0, 3.0, 440.0)], seed=1)
    url = fresh_database_url
    assert cli("--database-url", url, "ingest", str(folder), "--keyframes", "fps", "--fps", "1",
               "--json").exit_code == 0
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    monkeypatch.setenv(vggish.WEIGHTS_ENV, str(bad))
    failed = cli("--database-url", url, "audio", "build", "--json")
    assert failed.exit_code != 0 and failed.stdout == ""
    assert len(failed.stderr.strip().splitlines()) == 1 and "not VGGish weights" in failed.stderr
    monkeypatch.setenv(vggish.WEIGHTS_ENV, str(random_weights))
    built = cli("--database-url", url, "audio", "build", "--json")
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert (report["method"], report["videos"], report["seconds_added"]) == ("vggish", 1, 3)
    db = open_database(Settings(home=tmp_path / "home", database_url=url))
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT method, start_seconds, end_seconds, vector_dims(vec::vector) "
                                    "FROM audio_segments ORDER BY start_seconds")).all()
    db.dispose()
    assert [r[0] for r in rows] == ["vggish"] * 3 and {r[3] for r in rows} == {128}
    np.testing.assert_allclose([r[1] for r in rows], [0.0, 0.96, 1.92], atol=1e-9)
    np.testing.assert_allclose([r[2] for r in rows], [0.96, 1.92, 2.88], atol=1e-9)
    found = cli("--database-url", url, "search", "--audio", str(folder / "tone.mp4"), "--k", "2", "--json",
                "--no-save")
    assert found.exit_code == 0, found.stderr
    searched = json.loads(found.stdout)
    assert searched["params"]["method"] == "vggish" and len(searched["results"]) == 2
    assert all(hit["distance"] < 0.1 for hit in searched["results"])  # the same tone throughout the clip
    logmel = json.loads(cli("--database-url", url, "audio", "build", "--method", "logmel", "--json").stdout)
    assert (logmel["method"], logmel["seconds_added"]) == ("logmel-v1", 3)
