"""Torch dataset, collate and loader for VOC-format detection data (real VOC or the generated set).

The dataset wraps :mod:`ssd_runtime.voc` records and the safe loader :func:`ssd_runtime.images.open_image`
(one reader for training, PyTorch evaluation and runtime evaluation), applies
:func:`ssd_train.augment.train_transform` or :func:`~ssd_train.augment.test_transform`, and normalizes.

Randomness: every sample draws from its own ``numpy.random.Generator`` seeded by
``(seed, epoch, index)``, so a sample's augmentation does not depend on the worker that makes it,
on the number of workers, or on what was loaded before (a resumed run sees the same data).
:class:`EpochSampler` yields ``(epoch, index)`` keys; an ``int`` key means epoch 0.
:func:`seed_worker` additionally gives each DataLoader worker its own seed for Python's ``random``
and NumPy's global state, derived from the loader's generator (itself seeded from ``seed``).
"""
from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssd_runtime.datasets import dataset_classes, read_split
from ssd_runtime.errors import ImageError
from ssd_runtime.images import open_image
from ssd_runtime.spec import IMAGENET_MEAN, IMAGENET_STD, normalization
from ssd_runtime.voc import ReadReport, VOCRecord, fit_to_image, without_crowd
from ssd_train.augment import AUGMENTATIONS, test_transform, train_transform

#: One sample: image float32 (3, S, S) normalized; boxes float32 (K, 4) fractional xyxy; labels int64
#: (K,); difficult bool (K,).
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: A batch: images (N, 3, S, S) and per-image lists of boxes, labels, difficult.
Batch = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


class VOCDetection(Dataset):
    """VOC-format detection dataset.

    Args:
        records: from :func:`ssd_runtime.datasets.read_split`; with ``train`` their crowd regions are left out
            (:func:`ssd_runtime.voc.without_crowd`), otherwise kept (difficult: evaluation ignores them).
        class_names: background first; travels into the model spec.
        train: apply the training augmentation (else resize + normalize only).
        augment: the training augmentation, "reference" (default), "light" or "flip"
            (:data:`ssd_train.augment.AUGMENTATIONS`).
        seed: base seed of the per-sample generators.
        size: output side in pixels (300 for SSD300).
        mean, std: RGB normalization of [0, 1] values (from the model spec).
        on_bad_image: ``"error"`` raises :class:`~ssd_runtime.errors.ImageError` naming the file;
            ``"skip"`` warns and serves the next readable image instead (deterministically).
    """

    def __init__(
        self,
        records: list[VOCRecord],
        class_names: tuple[str, ...],
        *,
        train: bool,
        seed: int = 0,
        size: int = 300,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        on_bad_image: str = "error",
        augment: str = "reference",
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if not records:
            raise ValueError("the dataset has no images; check the split file")
        self.records = [without_crowd(r) for r in records] if train else list(records)
        self.class_names = tuple(class_names)
        self.train = train
        self.augment = augment
        self.seed = int(seed)
        self.size = int(size)
        self.on_bad_image = on_bad_image
        self.mean, self.std = tuple(mean), tuple(std)
        # normalize uint8 directly: (x / 255 - mean) / std = x * scale + bias
        self._scale, self._bias = _normalization(mean, std)
        self.skipped: list[str] = []

    @classmethod
    def from_voc(
        cls,
        path: str | os.PathLike | list[str | os.PathLike],
        split: str,
        *,
        class_names: tuple[str, ...] | None = None,
        train: bool,
        strict: bool = False,
        skip_unknown: bool = False,
        report: ReadReport | None = None,
        data_format: str = "auto",
        **kwargs,
    ) -> VOCDetection:
        """Read ``split`` of a dataset in any layout (:func:`ssd_runtime.datasets.read_split`): a VOC root, a
        VOCdevkit (07+12 for trainval, 07 for test), a list of VOC roots, a COCO or a YOLO root.

        ``class_names`` defaults to the dataset's own (:func:`ssd_runtime.datasets.dataset_classes`);
        ``data_format``: the layout ("auto": detected from what is on disk).
        """
        if class_names is None:
            class_names = dataset_classes(path, split, format=data_format, warn=False)[0]
        records = read_split(path, split, class_names, format=data_format, strict=strict, skip_unknown=skip_unknown,
                             report=report)
        return cls(records, class_names, train=train, **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def generator(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in ``epoch`` (independent of worker and order)."""
        return np.random.default_rng([self.seed, epoch, index])

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        return self.load(key)

    def load(self, key: int | tuple[int, int], *, normalize: bool = True) -> Sample:
        """Sample ``key`` (an index, or (epoch, index)); ``normalize=False`` keeps the image uint8 (3, S, S)
        for :class:`Collate` to normalize a whole batch at once (what :func:`make_loader` does)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                return self._sample(record, epoch, (index + attempt) % len(self.records), normalize)
            except ImageError as exc:
                if self.on_bad_image == "error":
                    raise
                self.skipped.append(str(record.image_path))
                warnings.warn(f"skipping unreadable image (on_bad_image='skip'): {exc}", stacklevel=2)
        raise ImageError("no readable image in the dataset (every image failed to decode)")

    def _sample(self, record: VOCRecord, epoch: int, index: int, normalize: bool) -> Sample:
        image = open_image(record.image_path)
        if image.size != (record.width, record.height):
            warnings.warn(
                f"{record.annotation_path}: <size> says {record.width}x{record.height} but {record.image_path} is "
                f"{image.size[0]}x{image.size[1]}; boxes clipped to the image",
                stacklevel=2,
            )
        boxes, labels, difficult = fit_to_image(record, image.size)
        if self.train:
            pixels, frac, labels, difficult = train_transform(
                image, boxes, labels, difficult, self.generator(epoch, index), self.size, self.augment
            )
        else:
            pixels, frac = test_transform(image, boxes, self.size)
        # (S, S, 3) uint8 HWC -> (3, S, S) CHW
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
        if normalize:
            tensor = torch.from_numpy(chw.astype(np.float32)).mul_(self._scale).add_(self._bias)
        else:
            tensor = torch.from_numpy(chw)
        return (
            tensor,
            torch.from_numpy(np.ascontiguousarray(frac, dtype=np.float32)),
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            torch.from_numpy(np.asarray(difficult, dtype=bool)),
        )


def _normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (scale, bias) tensors shaped (3, 1, 1) for CHW images: :func:`ssd_runtime.spec.normalization`."""
    scale, bias = normalization(mean, std)
    return torch.from_numpy(scale).view(3, 1, 1), torch.from_numpy(bias).view(3, 1, 1)


class Collate:
    """Batch samples: images (N, 3, S, S) float32 normalized; per-image boxes (K_i, 4), labels (K_i,),
    difficult (K_i,) as lists.

    uint8 images (``VOCDetection.load(normalize=False)``) are converted and normalized straight into
    the batch tensor - one pass instead of a float copy per image plus a stack. In a DataLoader worker
    the batch is allocated in shared memory (as torch's default collate does) and each per-image list
    is a set of views of one tensor, so a batch crosses to the main process as four shared buffers.
    Already-normalized float images are stacked as they are.
    """

    def __init__(
        self,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalize = normalize
        self._scale, self._bias = _normalization(mean, std)

    def __call__(self, batch: list[Sample]) -> Batch:
        images = [sample[0] for sample in batch]
        shape = (len(images), *images[0].shape)
        keep_uint8 = not self.normalize and images[0].dtype == torch.uint8
        dtype = torch.uint8 if keep_uint8 else torch.float32
        if torch.utils.data.get_worker_info() is not None:
            numel = len(images) * images[0].numel()
            storage = torch.empty(0).untyped_storage()._new_shared(numel * dtype.itemsize)
            out = torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        else:
            out = torch.empty(shape, dtype=dtype)
        if keep_uint8:
            torch.stack(images, 0, out=out)
        elif images[0].dtype == torch.uint8:
            for i, image in enumerate(images):
                torch.mul(image, self._scale, out=out[i])
            out.add_(self._bias)
        else:
            torch.stack(images, 0, out=out)
        counts = [int(sample[1].shape[0]) for sample in batch]
        boxes = torch.cat([sample[1] for sample in batch]).split(counts)
        labels = torch.cat([sample[2] for sample in batch]).split(counts)
        difficult = torch.cat([sample[3] for sample in batch]).split(counts)
        return out, list(boxes), list(labels), list(difficult)


#: Collate with the ImageNet normalization of the reference (use ``Collate(spec.mean, spec.std)`` otherwise).
collate = Collate()


def normalize_batch(
    images: torch.Tensor, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 (N, 3, S, S) batch (``Collate(normalize=False)``) -> float32 normalized, on its device.

    The same operations in the same order as :class:`Collate`, so the result is bit-identical; run it
    after the transfer to the GPU and the loader moves 4x fewer bytes and does less work per image.
    """
    scale, bias = (x.to(images.device) for x in _normalization(mean, std))
    return images.float().mul_(scale).add_(bias)


class UInt8View(Dataset):
    """``dataset.load(key, normalize=False)``: uint8 images, normalized per batch by :class:`Collate`.

    The fast way to feed a DataLoader (what :func:`make_loader` does)::

        DataLoader(UInt8View(ds), sampler=..., collate_fn=Collate(ds.mean, ds.std), ...)

    gives the same batches as ``DataLoader(ds, collate_fn=collate)`` with one float pass per batch
    instead of a float copy per image plus a stack.
    """

    def __init__(self, dataset: VOCDetection) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        return self.dataset.load(key, normalize=False)


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of ``epoch``: a permutation of ``range(num_items)`` seeded by ``(seed, epoch)``, int64.

    The one definition of an epoch's order: :class:`EpochSampler` and the training run's
    ``GlobalBatchSampler`` (``ssd_train.distributed``) both call it.
    """
    return np.random.default_rng([seed, epoch, 0x5A]).permutation(num_items)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: :func:`epoch_order` of ``(seed, epoch)`` (or in order), from ``start``.

    ``start`` skips the first keys of the epoch (resuming mid-epoch). Call :meth:`set_epoch` per epoch.
    """

    def __init__(self, num_items: int, *, seed: int = 0, shuffle: bool = True, epoch: int = 0, start: int = 0) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = int(epoch)
        self.start = int(start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> np.ndarray:
        """Indices of the current epoch, int64 (num_items,)."""
        if not self.shuffle:
            return np.arange(self.num_items)
        return epoch_order(self.num_items, self.seed, self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start :]:
            yield (self.epoch, int(index))

    def __len__(self) -> int:
        return max(0, self.num_items - self.start)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and NumPy's global state from this worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def make_loader(
    dataset: VOCDetection,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    epoch: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    normalize: bool = True,
) -> DataLoader:
    """A reproducible DataLoader over ``dataset`` (an :class:`EpochSampler`; ``loader.sampler.set_epoch``).

    Workers produce uint8 images and :class:`Collate` normalizes each batch with the dataset's mean/std;
    ``normalize=False`` yields uint8 batches for :func:`normalize_batch` on the training device.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        UInt8View(dataset),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed=seed, shuffle=shuffle, epoch=epoch),
        num_workers=workers,
        collate_fn=Collate(dataset.mean, dataset.std, normalize=normalize),
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )
