"""Brief training for test models: small SSD300s whose activations and scores are shaped by training.

The session fixture ``runtime_checkpoint`` (tests/conftest.py) trains the one model most tests share;
tests that need another configuration (a BatchNorm variant, say) build theirs with these helpers.
Barely trained models, but with peaked softmax scores, grown conv4_3 activations and real detections
above the detection threshold, unlike a random initialisation.
"""
from __future__ import annotations

import numpy as np
import torch

from ssd_runtime.preprocess import normalize
from ssd_runtime.spec import ModelSpec
from ssd_train.augment import test_transform
from ssd_train.loss import MultiBoxLoss
from ssd_train.model import SSD300
from ssd_train.synthetic import CLASS_NAMES, render_image

#: Seed of the generated training scenes (verification uses ssd_export.defaults.VERIFY_SEED).
TRAIN_SEED = 7
#: Width multiplier of every test model (a few MB, fast on a 2-core CPU).
TEST_WIDTH = 0.125
#: Adam steps of the session's model (tests/conftest.py ``runtime_checkpoint``).
SESSION_STEPS = 14

__all__ = ["CLASS_NAMES", "SESSION_STEPS", "TEST_WIDTH", "TRAIN_SEED", "scene_batch", "session_checkpoint",
           "small_model", "train_briefly"]


def small_model(class_names: tuple[str, ...] | list[str] = CLASS_NAMES, **spec_options) -> tuple[SSD300, ModelSpec]:
    """A width-0.125 SSD300 (torch seeded with 0 first) and its spec; ``spec_options`` go to ModelSpec.create."""
    torch.manual_seed(0)
    spec = ModelSpec.create(class_names, width=TEST_WIDTH, **spec_options)
    return SSD300.from_spec(spec), spec


def scene_batch(count: int, spec: ModelSpec, seed: int = TRAIN_SEED) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """``count`` generated scenes, resized as evaluation does: images float32 (N, 3, S, S) normalized,
    boxes per image float32 (K, 4) fractional xyxy, labels per image int64 (K,)."""
    pixels, boxes, labels = [], [], []
    for i in range(count):
        image, objects = render_image(seed, i)
        # VOC boxes are 1-based inclusive pixels -> 0-based xyxy pixels
        voc = np.array([[o.xmin - 1, o.ymin - 1, o.xmax, o.ymax] for o in objects], np.float32).reshape(-1, 4)
        resized, frac = test_transform(image, voc, spec.input_size)
        pixels.append(resized)
        boxes.append(torch.from_numpy(np.ascontiguousarray(frac, np.float32)))
        labels.append(torch.tensor([CLASS_NAMES.index(o.name) for o in objects], dtype=torch.int64))
    images = torch.from_numpy(normalize(np.stack(pixels), spec))
    return images, boxes, labels


def train_briefly(model, images, boxes, labels, *, steps: int, pairs: int) -> float:
    """A few Adam steps (lr 2e-3) cycling over ``pairs`` 2-image slices; leaves the model in eval mode.

    Returns the last loss.
    """
    criterion = MultiBoxLoss(model.priors_cxcy)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        idx = slice((step % pairs) * 2, (step % pairs) * 2 + 2)
        loss = criterion(*model(images[idx]), boxes[idx], labels[idx]).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()



def session_checkpoint(voc_root, out, steps: int = SESSION_STEPS):
    """The session's briefly trained model (tests/conftest.py ``runtime_checkpoint``), saved to ``out``.

    voc_root: a generated VOC dataset (``generate_voc_dataset(root, images=24, test=8)``, the tests'
    ``voc_root``); trained on its first 8 trainval images, evaluation transform, ``steps`` Adam steps.
    Benchmarks and GPU checks rebuild the tests' model with this. Returns the checkpoint path.
    """
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.data import VOCDetection, collate

    dataset = VOCDetection.from_voc(voc_root, "trainval", train=False)
    model, spec = small_model(dataset.class_names)
    images, boxes, labels, _ = collate([dataset[i] for i in range(8)])
    train_briefly(model, images, boxes, labels, steps=steps, pairs=4)
    return save_checkpoint(out, model, spec)
