"""Shared fixtures: a small-width SSD300 trained briefly on generated scenes, saved as a checkpoint."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd_runtime.spec import ModelSpec
from ssd_train.augment import test_transform
from ssd_train.checkpoint import save_checkpoint
from tests.conftest import train_briefly
from ssd_train.model import SSD300
from ssd_train.synthetic import CLASS_NAMES, render_image

TRAIN_SEED = 7  # the verification images use another seed (ssd_export.verify.VERIFY_SEED)


def _training_batch(count: int, spec: ModelSpec) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    from ssd_runtime.preprocess import normalize

    pixels, boxes, labels = [], [], []
    for i in range(count):
        image, objects = render_image(TRAIN_SEED, i)
        # VOC boxes are 1-based inclusive pixels -> 0-based xyxy pixels
        voc = np.array([[o.xmin - 1, o.ymin - 1, o.xmax, o.ymax] for o in objects], np.float32).reshape(-1, 4)
        resized, frac = test_transform(image, voc, spec.input_size)
        pixels.append(resized)
        boxes.append(torch.from_numpy(np.ascontiguousarray(frac, np.float32)))
        labels.append(torch.tensor([CLASS_NAMES.index(o.name) for o in objects], dtype=torch.int64))
    images = torch.from_numpy(normalize(np.stack(pixels), spec))
    return images, boxes, labels


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-0.125 SSD300 (8 classes) trained for a few Adam steps on generated scenes (~10 s on 2 cores).

    Barely trained, but its activations and scores are shaped by training (peaked softmax, grown
    conv4_3 activations), unlike a random initialisation.
    """
    start = time.perf_counter()
    torch.manual_seed(0)
    spec = ModelSpec.create(CLASS_NAMES, width=0.125)
    model = SSD300.from_spec(spec)
    images, boxes, labels = _training_batch(4, spec)
    loss = train_briefly(model, images, boxes, labels, steps=12, pairs=2)
    path = tmp_path_factory.mktemp("trained") / "small.pt"
    save_checkpoint(path, model, spec)
    print(f"trained fixture: final loss {loss:.3f} in {time.perf_counter() - start:.1f} s")
    return path
