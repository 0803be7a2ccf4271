"""Shared test setup: hardware markers skip where the hardware is absent."""
from __future__ import annotations

import importlib.util

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU"))


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory):
    """A tiny generated VOC-format dataset (16 trainval + 8 test images)."""
    from ssd_train.synthetic import generate_voc_dataset

    root = tmp_path_factory.mktemp("voc") / "data"
    generate_voc_dataset(root, images=24, test=8)
    return root


@pytest.fixture(scope="session")
def runtime_checkpoint(voc_root, tmp_path_factory: pytest.TempPathFactory):
    """A width-0.125 SSD300 trained for a few Adam steps on the tiny dataset (evaluation transform).

    Barely trained, but with peaked scores and real detections above the detection threshold.
    """
    import torch

    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.data import VOCDetection, collate
    from ssd_train.model import SSD300

    torch.manual_seed(0)
    dataset = VOCDetection.from_voc(voc_root, "trainval", train=False)
    spec = ModelSpec.create(dataset.class_names, width=0.125)
    model = SSD300.from_spec(spec)
    images, boxes, labels, _ = collate([dataset[i] for i in range(8)])
    train_briefly(model, images, boxes, labels, steps=14, pairs=4)
    path = tmp_path_factory.mktemp("runtime") / "small.pt"
    save_checkpoint(path, model, spec)
    return path


@pytest.fixture(scope="session")
def runtime_onnx(runtime_checkpoint):
    """The fp32 ONNX export of ``runtime_checkpoint`` (dynamic batch)."""
    from ssd_export.onnx_export import export_onnx

    out = runtime_checkpoint.with_suffix(".onnx")
    export_onnx(runtime_checkpoint, out, verify=False)
    return out


def train_briefly(model, images, boxes, labels, *, steps: int, pairs: int) -> float:
    """A few Adam steps (lr 2e-3) cycling over ``pairs`` 2-image slices; leaves the model in eval mode.

    Makes test models whose activations and scores are shaped by training (peaked softmax, grown
    conv4_3 activations), unlike a random initialisation. Returns the last loss.
    """
    import torch

    from ssd_train.loss import MultiBoxLoss

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
