"""A small-width SSD300 with the MultiBox loss overfits four synthetic images on the CPU."""
import torch

from ssd_train import SSD300, MultiBoxLoss

# Per image: (x_min, y_min, x_max, y_max) fractional, class 1..3 drawn as a solid colour block.
OBJECTS = [
    [(0.10, 0.10, 0.50, 0.45, 1), (0.55, 0.50, 0.95, 0.90, 2)],
    [(0.20, 0.30, 0.80, 0.70, 3)],
    [(0.05, 0.60, 0.30, 0.95, 2), (0.40, 0.05, 0.90, 0.40, 1)],
    [(0.30, 0.30, 0.60, 0.60, 3)],
]
COLOURS = {1: (2.0, -1.0, -1.0), 2: (-1.0, 2.0, -1.0), 3: (-1.0, -1.0, 2.0)}


def synthetic_batch() -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(len(OBJECTS), 3, 300, 300, generator=generator) * 0.3
    boxes, labels = [], []
    for i, objects in enumerate(OBJECTS):
        for x0, y0, x1, y1, c in objects:
            rows, cols = slice(int(y0 * 300), int(y1 * 300)), slice(int(x0 * 300), int(x1 * 300))
            images[i, :, rows, cols] = torch.tensor(COLOURS[c])[:, None, None]
        boxes.append(torch.tensor([o[:4] for o in objects]))
        labels.append(torch.tensor([o[4] for o in objects]))
    return images, boxes, labels


def test_small_model_overfits_four_images():
    torch.manual_seed(0)
    images, boxes, labels = synthetic_batch()
    model = SSD300(num_classes=4, width=0.125)
    criterion = MultiBoxLoss(model.priors_cxcy)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(300):
        parts = criterion(*model(images), boxes, labels)
        optimizer.zero_grad()
        parts.total.backward()
        optimizer.step()
        losses.append(parts.total.item())
        if losses[-1] <= losses[0] / 10 and len(losses) >= 20:
            break
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses) <= losses[0] / 10, f"loss went from {losses[0]:.3f} to at best {min(losses):.3f} in {len(losses)} steps"
