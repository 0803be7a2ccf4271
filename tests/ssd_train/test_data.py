"""Torch dataset, collate, sampler and loader over VOC-format data."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_runtime.errors import ImageError
from ssd_runtime.spec import IMAGENET_MEAN, IMAGENET_STD
from ssd_train.data import EpochSampler, VOCDetection, collate, make_loader
from ssd_train.synthetic import CLASS_NAMES, generate_voc_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("voc")
    generate_voc_dataset(out, images=24, test=6, seed=1)
    return out


def test_train_sample_shapes_and_types(root):
    ds = VOCDetection.from_voc(root, "trainval", train=True, seed=0)
    assert len(ds) == 18 and ds.class_names == CLASS_NAMES
    image, boxes, labels, difficult = ds[0]
    assert image.shape == (3, 300, 300) and image.dtype == torch.float32
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    assert labels.dtype == torch.int64 and difficult.dtype == torch.bool
    assert boxes.shape[0] == labels.shape[0] == difficult.shape[0]
    assert ((boxes >= 0) & (boxes <= 1)).all() and (labels >= 1).all() and (labels < len(CLASS_NAMES)).all()


def test_test_transform_is_resize_and_normalize(root):
    ds = VOCDetection.from_voc(root, "test", train=False)
    image, boxes, labels, _ = ds[2]
    record = ds.records[2]
    raw = np.asarray(Image.open(record.image_path).convert("RGB").resize((300, 300), Image.BILINEAR), np.float32) / 255
    expected = (raw - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    scale = np.array([record.width, record.height] * 2, np.float32)
    np.testing.assert_allclose(boxes.numpy(), record.boxes / scale, rtol=1e-6)
    assert torch.equal(labels, torch.from_numpy(record.labels))


def test_collate(root):
    ds = VOCDetection.from_voc(root, "trainval", train=True)
    images, boxes, labels, difficult = collate([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 300, 300)
    assert len(boxes) == len(labels) == len(difficult) == 4


def test_samples_reproducible_and_depend_on_epoch(root):
    ds = VOCDetection.from_voc(root, "trainval", train=True, seed=7)
    a, b, c = ds[(0, 5)], ds[(0, 5)], ds[(1, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    other_seed = VOCDetection.from_voc(root, "trainval", train=True, seed=8)
    assert not torch.equal(a[0], other_seed[(0, 5)][0])


def test_sampler_order_reproducible_and_resumable():
    s = EpochSampler(10, seed=3, epoch=2)
    keys = list(s)
    assert sorted(i for _, i in keys) == list(range(10)) and all(e == 2 for e, _ in keys)
    assert keys == list(EpochSampler(10, seed=3, epoch=2))
    assert keys[4:] == list(EpochSampler(10, seed=3, epoch=2, start=4))
    assert keys != list(EpochSampler(10, seed=3, epoch=3))
    assert [i for _, i in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]


def test_loader_same_batches_with_0_1_2_workers(root):
    ds = VOCDetection.from_voc(root, "trainval", train=True, seed=0)
    results = []
    for workers in (0, 2):
        loader = make_loader(ds, 6, seed=11, workers=workers)
        loader.sampler.set_epoch(1)
        results.append([batch for batch in loader])
    for (im0, bx0, lb0, _), (im1, bx1, lb1, _) in zip(*results):
        assert torch.equal(im0, im1)
        assert all(torch.equal(a, b) for a, b in zip(bx0, bx1))
        assert all(torch.equal(a, b) for a, b in zip(lb0, lb1))


def test_bad_image_errors_or_is_skipped(root, tmp_path):
    ds = VOCDetection.from_voc(root, "trainval", train=True)
    bad = tmp_path / "bad.jpg"
    data = ds.records[0].image_path.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    from dataclasses import replace

    records = [replace(ds.records[0], image_path=bad)] + ds.records[1:]
    strict = VOCDetection(records, CLASS_NAMES, train=True)
    with pytest.raises(ImageError, match="bad.jpg"):
        strict[0]
    lenient = VOCDetection(records, CLASS_NAMES, train=True, on_bad_image="skip")
    with pytest.warns(UserWarning, match="bad.jpg"):
        image, *_ = lenient[0]
    assert image.shape == (3, 300, 300) and lenient.skipped == [str(bad)]


def test_size_mismatch_clips_to_the_decoded_image(root):
    from dataclasses import replace

    ds = VOCDetection.from_voc(root, "test", train=False)
    rec = ds.records[0]
    big = replace(rec, width=rec.width * 2, height=rec.height * 2, boxes=rec.boxes * 2)
    with pytest.warns(UserWarning, match="boxes clipped"):
        _, boxes, labels, _ = VOCDetection([big], CLASS_NAMES, train=False)[0]
    assert ((boxes >= 0) & (boxes <= 1)).all() and labels.shape[0] == boxes.shape[0]


def test_images_without_objects_and_all_difficult(tmp_path):
    from ssd_runtime.voc import read_voc_split

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    Image.new("RGB", (120, 90), (10, 200, 30)).save(tmp_path / "JPEGImages/a.jpg")
    Image.new("RGB", (120, 90), (10, 200, 30)).save(tmp_path / "JPEGImages/b.jpg")
    (tmp_path / "Annotations/a.xml").write_text("<annotation><size><width>120</width><height>90</height></size></annotation>")
    (tmp_path / "Annotations/b.xml").write_text(
        "<annotation><size><width>120</width><height>90</height></size><object><name>star</name><difficult>1</difficult>"
        "<bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "ImageSets/Main/trainval.txt").write_text("a\nb\n")
    ds = VOCDetection(read_voc_split([tmp_path], "trainval", CLASS_NAMES), CLASS_NAMES, train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for epoch in range(5):
            image, boxes, labels, difficult = ds[(epoch, 0)]
            assert boxes.shape == (0, 4) and torch.isfinite(image).all()
            _, boxes, labels, difficult = ds[(epoch, 1)]
            assert difficult.all()


def test_bad_arguments(root):
    ds = VOCDetection.from_voc(root, "test", train=False)
    with pytest.raises(ValueError, match="on_bad_image"):
        VOCDetection(ds.records, CLASS_NAMES, train=False, on_bad_image="ignore")
    with pytest.raises(ValueError, match="no images"):
        VOCDetection([], CLASS_NAMES, train=False)


def test_loader_batches_equal_normalized_samples(root):
    ds = VOCDetection.from_voc(root, "trainval", train=True, seed=4)
    loader = make_loader(ds, 5, seed=2, workers=1)
    keys = list(loader.sampler)[:5]
    images, boxes, labels, difficult = next(iter(loader))
    expected = collate([ds[k] for k in keys])
    torch.testing.assert_close(images, expected[0], atol=1e-6, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(boxes, expected[1]))
    assert images.dtype == torch.float32 and images.shape == (5, 3, 300, 300)


def test_plain_dataloader_with_collate_matches_uint8_view(root):
    from torch.utils.data import DataLoader

    from ssd_train.data import Collate, UInt8View

    ds = VOCDetection.from_voc(root, "trainval", train=True, seed=9)
    keys = [(0, i) for i in range(6)]
    plain = next(iter(DataLoader(ds, batch_size=6, sampler=keys, num_workers=1, collate_fn=collate)))
    fast = next(iter(DataLoader(UInt8View(ds), batch_size=6, sampler=keys, num_workers=0, collate_fn=Collate(ds.mean, ds.std))))
    torch.testing.assert_close(plain[0], fast[0], atol=1e-6, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(plain[2], fast[2]))


def test_uint8_batches_normalized_on_the_device_equal_collate():
    import torch

    from ssd_train.data import Collate, normalize_batch

    rng = np.random.default_rng(0)
    samples = [(torch.from_numpy(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)), torch.zeros(0, 4),
                torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool)) for _ in range(3)]
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    floats = Collate(mean, std)(samples)[0]
    raw = Collate(mean, std, normalize=False)(samples)[0]
    assert raw.dtype == torch.uint8
    assert torch.equal(normalize_batch(raw, mean, std), floats)


def test_the_coco_and_yolo_layouts_give_the_same_training_samples(root, tmp_path):
    """Same records, same per-sample generators: a run on either layout trains on the same tensors."""
    from ssd_runtime.convert import convert_dataset

    voc = VOCDetection.from_voc(root, "trainval", train=True, seed=5)
    for layout in ("coco", "yolo"):
        convert_dataset(root, tmp_path / layout, layout, images="link")
        other = VOCDetection.from_voc(tmp_path / layout, "trainval", train=True, seed=5)
        assert other.class_names == voc.class_names and len(other) == len(voc)
        for key in ((0, 0), (3, 1), (1, len(voc) - 1)):
            for a, b in zip(voc[key], other[key]):
                if a.dtype != torch.bool or layout == "coco":  # YOLO has no difficult flags
                    assert torch.equal(a, b)


def test_crowd_regions_are_left_out_of_training_and_ignored_in_evaluation(tmp_path):
    from tests.helpers.dataset_files import coco_ann, coco_image, make_coco

    root = make_coco(tmp_path, [coco_image(1, "a.jpg", size=(120, 90))],
                     [coco_ann(1, 1, 4, [10, 10, 40, 50]), coco_ann(2, 1, 2, [60, 20, 30, 30], iscrowd=1)],
                     [(i, name) for i, name in enumerate(CLASS_NAMES[1:], 1)], image_size=(120, 90))
    evaluation = VOCDetection.from_voc(root, "trainval", train=False)
    _, boxes, labels, difficult = evaluation[0]
    assert labels.tolist() == [4, 2] and difficult.tolist() == [False, True]
    training = VOCDetection.from_voc(root, "trainval", train=True)
    assert training.records[0].labels.tolist() == [4] and training.records[0].crowd.tolist() == [False]
