"""Runtime preprocessing equals the evaluation transform of training; bad inputs get clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssd_runtime.preprocess import InputError, as_image_list, preprocess
from ssd_runtime.spec import ModelSpec

SPEC = ModelSpec.create(("background", "a", "b"))


def test_equals_the_torch_evaluation_transform(voc_root):
    """Same float32 values, bit for bit, as ssd_train's evaluation dataset + collate."""
    from ssd_train.data import UInt8View, VOCDetection, collate

    dataset = VOCDetection.from_voc(voc_root, "test", train=False)
    paths = [r.image_path for r in dataset.records[:3]]
    expected = collate([dataset[i] for i in range(3)])[0].numpy()
    batch = preprocess(paths, SPEC)
    assert batch.pixels.dtype == np.float32 and batch.pixels.shape == (3, 3, 300, 300)
    np.testing.assert_array_equal(batch.pixels, expected)
    assert batch.sizes == [(r.width, r.height) for r in dataset.records[:3]]
    # the uint8 view (what the fast training loader uses) is the uint8 kind
    uint8 = preprocess(paths, SPEC, "uint8-nhwc").pixels
    np.testing.assert_array_equal(uint8, np.stack([UInt8View(dataset)[i][0].numpy().transpose(1, 2, 0) for i in range(3)]))


def test_path_pil_and_array_agree(voc_root):
    path = sorted((voc_root / "JPEGImages").glob("*.jpg"))[0]
    from ssd_runtime.images import open_image

    pil = open_image(path)
    array = np.asarray(pil)
    a, b, c = (preprocess([x], SPEC).pixels for x in (path, pil, array))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # a grayscale PIL image is converted to RGB, as the loader does for files
    gray = preprocess([pil.convert("L")], SPEC).pixels
    np.testing.assert_array_equal(gray, preprocess([pil.convert("L").convert("RGB")], SPEC).pixels)


def test_batch_forms():
    arrays = np.random.default_rng(0).integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
    images, batched = as_image_list(arrays)
    assert batched and len(images) == 3
    assert as_image_list(arrays[0])[1] is False
    assert as_image_list([arrays[0]])[1] is True
    batch = preprocess(images, SPEC)
    assert batch.sizes == [(50, 40)] * 3


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((40, 50, 3), np.float64), ["(H, W, 3)", "float64", "(40, 50, 3)"]),
        (np.zeros((3, 40, 50), np.uint8), ["(3, 40, 50)", "CHW"]),
        (np.zeros((40, 50), np.uint8), ["(40, 50)"]),
        (np.zeros((40, 50, 4), np.uint8), ["(40, 50, 4)"]),
    ],
)
def test_wrong_arrays_name_expected_and_received(array, words):
    with pytest.raises(InputError) as info:
        preprocess([array], SPEC)
    for word in words:
        assert word in str(info.value)


def test_other_errors(tmp_path):
    with pytest.raises(InputError, match="no images"):
        preprocess([], SPEC)
    with pytest.raises(InputError, match="received int"):
        as_image_list(3)
    with pytest.raises(FileNotFoundError):
        preprocess([tmp_path / "missing.jpg"], SPEC)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg"):
        preprocess([tmp_path / "text.jpg"], SPEC)
    with pytest.raises(InputError, match="image 1"):
        preprocess([Image.new("RGB", (10, 10)), np.zeros((5, 5, 3), np.float32)], SPEC)
