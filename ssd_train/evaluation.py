"""PyTorch evaluation: the VOC mAP of a model on a VOC-format split (during training and ``ssd-train eval``)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ssd_runtime.spec import ModelSpec
from ssd_train.config import TrainConfig
from ssd_train.data import VOCDetection, collate
from ssd_train.model import SSD300


@torch.no_grad()
def evaluate(
    model: SSD300,
    dataset: VOCDetection,
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    *,
    ap_method: str = "11point",
    channels_last: bool = False,
    workers: int = 0,
):
    """VOC mAP of ``model`` on ``dataset`` at the spec's evaluation settings (the one NumPy metric).

    The postprocess is the NumPy one on the CPU and the torch reference on a GPU (identical detections).
    """
    from ssd_runtime.metric import GroundTruth, voc_map
    from ssd_runtime.postprocess import postprocess
    from ssd_runtime.postprocess_torch import postprocess_torch

    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    priors = model.priors_cxcy.cpu().numpy()
    detections, truths = [], []
    for images, boxes, labels, difficult in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        locs, logits = model(images)
        if device.type == "cpu":  # the NumPy implementation: identical detections (tested), much faster on a CPU
            detections.extend(postprocess(locs.float().numpy(), logits.float().numpy(), priors, spec.evaluation,
                                          spec.variances))
        else:
            detections.extend(postprocess_torch(locs.float(), logits.float(), model.priors_cxcy, spec.evaluation,
                                                spec.variances))
        truths.extend(GroundTruth.create(b.numpy(), lab.numpy(), d.numpy()) for b, lab, d in zip(boxes, labels, difficult))
    model.train(was_training)
    return voc_map(detections, truths, spec.class_names, ap_method=ap_method)


def eval_dataset(config: TrainConfig, class_names: tuple[str, ...], spec: ModelSpec) -> VOCDetection:
    """The test split of ``config.data`` that periodic evaluation reads (the first ``eval_images`` images)."""
    test_set = VOCDetection.from_voc(config.data, "test", class_names=class_names, train=False,
                                     skip_unknown=config.skip_unknown_classes, mean=spec.mean, std=spec.std, size=spec.input_size)
    if config.eval_images and config.eval_images < len(test_set):
        test_set.records = test_set.records[: config.eval_images]
    return test_set
