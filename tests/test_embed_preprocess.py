"""prepare_image: size, resize policy, validation, and running without torch."""

from __future__ import annotations

import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from sisyphus_db.embed.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    make_preprocessing,
    prepare_batch,
    prepare_image,
)
from sisyphus_db.errors import InputError, ModelError

PREP = make_preprocessing()


def wide_frame() -> np.ndarray:
    """A 16:9 frame, mid-grey, with a pure red block at the far left edge."""
    frame = np.full((180, 320, 3), 128, dtype=np.uint8)
    frame[:, :20] = (255, 0, 0)
    return frame


def test_preprocessing_is_json_ready() -> None:
    import json

    assert json.loads(json.dumps(PREP)) == PREP
    assert PREP["size"] == 224 and PREP["resize"] == "stretch"
    assert PREP["mean"] == list(IMAGENET_MEAN) and PREP["std"] == list(IMAGENET_STD)


def test_prepare_image_gives_model_size_uint8() -> None:
    for shape in [(180, 320, 3), (1000, 50, 3), (224, 224, 3), (10, 10, 3)]:
        out = prepare_image(np.zeros(shape, dtype=np.uint8), PREP)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_stretch_keeps_the_frame_edges() -> None:
    out = prepare_image(wide_frame(), PREP)
    # The red block at the left edge survives the whole-frame resize.
    assert out[112, 0, 0] > 200 and out[112, 0, 1] < 50


def test_center_crop_cuts_the_edges() -> None:
    out = prepare_image(wide_frame(), make_preprocessing(resize="center_crop"))
    assert out.shape == (224, 224, 3)
    assert abs(int(out[112, 0, 0]) - 128) < 5


def test_same_size_image_is_unchanged() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert np.array_equal(prepare_image(rgb, PREP), rgb)


def test_prepare_batch() -> None:
    batch = prepare_batch([np.zeros((50, 60, 3), np.uint8), np.ones((300, 200, 3), np.uint8)], PREP)
    assert batch.shape == (2, 224, 224, 3)
    assert prepare_batch([], PREP).shape == (0, 224, 224, 3)


def test_bad_inputs() -> None:
    with pytest.raises(
        InputError, match=r"^expected an RGB image as a uint8 array of shape \(H, W, 3\), got float32 \(4, 4, 3\)$"
    ):
        prepare_image(np.zeros((4, 4, 3), np.float32), PREP)
    with pytest.raises(InputError, match=r"got uint8 \(4, 4\)$"):
        prepare_image(np.zeros((4, 4), np.uint8), PREP)
    with pytest.raises(InputError, match=r"^expected a non-empty image, got shape \(0, 4, 3\)$"):
        prepare_image(np.zeros((0, 4, 3), np.uint8), PREP)
    with pytest.raises(ModelError, match=r"^unknown resize mode 'pad': choose one of stretch, center_crop$"):
        prepare_image(np.zeros((4, 4, 3), np.uint8), {**PREP, "resize": "pad"})


def test_prepare_image_runs_in_worker_processes() -> None:
    assert pickle.loads(pickle.dumps(prepare_image)) is prepare_image
    frames = [np.full((90, 160, 3), value, np.uint8) for value in (0, 100, 200)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        outputs = list(pool.map(prepare_image, frames, [PREP] * len(frames)))
    assert [int(out[0, 0, 0]) for out in outputs] == [0, 100, 200]


def test_preprocess_module_does_not_import_torch() -> None:
    code = "import sys, sisyphus_db.embed.preprocess; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
