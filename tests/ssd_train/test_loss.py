import math

import pytest
import torch
import torch.nn.functional as F

from ssd_runtime.boxes import encode as np_encode, xyxy_to_cxcywh as np_xyxy_to_cxcywh
from ssd_train import MultiBoxLoss
from ssd_train.loss import DegenerateBoxError

# Four hand-placed priors (cx, cy, w, h) for worked examples.
PRIORS = torch.tensor(
    [[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]
)


def test_matching_worked_example():
    loss = MultiBoxLoss(PRIORS)
    # Object 1 covers prior 0 exactly (IoU 1); object 2 overlaps prior 3 with IoU 0.36 only: it still
    # gets prior 3, forced as its best prior.
    boxes = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])]
    labels = [torch.tensor([1, 2])]
    true_locs, true_classes = loss.match(boxes, labels)
    assert true_classes.tolist() == [[1, 0, 0, 2]]
    torch.testing.assert_close(true_locs[0, 0], torch.zeros(4))
    expected = np_encode(np_xyxy_to_cxcywh(boxes[0][1].numpy()), PRIORS[3].numpy())
    torch.testing.assert_close(true_locs[0, 3], torch.from_numpy(expected).float())


def test_match_threshold():
    # The object overlaps priors 0 and 1 with IoU 0.4545 each: prior 0 is its forced best match, prior 1
    # becomes a positive only under a threshold below 0.4545.
    boxes, labels = [torch.tensor([[0.0, 0.0, 1.0, 0.55]])], [torch.tensor([1])]
    assert MultiBoxLoss(PRIORS).match(boxes, labels)[1].tolist() == [[1, 0, 0, 0]]
    assert MultiBoxLoss(PRIORS, threshold=0.4).match(boxes, labels)[1].tolist() == [[1, 1, 0, 0]]
    assert MultiBoxLoss(PRIORS, threshold=0.46).match(boxes, labels)[1].tolist() == [[1, 0, 0, 0]]


def test_forced_match_tie_later_object_wins():
    loss = MultiBoxLoss(PRIORS)
    boxes = [torch.tensor([[0.0, 0.0, 0.45, 0.45], [0.05, 0.05, 0.5, 0.5]])]  # both best on prior 0
    _, true_classes = loss.match(boxes, [torch.tensor([1, 2])])
    assert true_classes[0, 0].item() == 2


def test_loss_worked_example():
    loss = MultiBoxLoss(PRIORS, loc_loss="smooth_l1")
    boxes = [torch.tensor([[0.0, 0.0, 0.5, 0.5]])]  # matches prior 0 only, label 1
    labels = [torch.tensor([1])]
    locs = torch.zeros(1, 4, 4)
    locs[0, 0] = torch.tensor([0.5, -2.0, 0.0, 0.0])  # target offsets are all zero
    scores = torch.zeros(1, 4, 3)
    scores[0, 1] = torch.tensor([0.0, 2.0, 0.0])  # the hardest negative (CE highest)
    scores[0, 2] = torch.tensor([1.0, 0.0, 0.0])
    out = loss(locs, scores, boxes, labels)
    smooth_l1 = 0.5 * 0.5**2 + (2.0 - 0.5)  # |0.5| < 1 -> 0.5 x^2; |2| >= 1 -> |x| - 0.5
    assert out.loc.item() == pytest.approx(smooth_l1)
    ce = lambda logits, target: -F.log_softmax(logits, 0)[target].item()  # noqa: E731
    positive = ce(torch.zeros(3), 1)
    negatives = sorted([ce(scores[0, i], 0) for i in (1, 2, 3)], reverse=True)[:3]  # 3 x 1 positive
    assert out.conf.item() == pytest.approx(positive + sum(negatives))
    assert out.total.item() == pytest.approx(out.conf.item() + out.loc.item())
    assert out.num_positives.item() == 1


def test_hard_negative_count_is_three_per_positive():
    priors = torch.rand(40, 2) * 0.8 + 0.1
    priors = torch.cat([priors, torch.full((40, 2), 0.05)], 1)
    loss = MultiBoxLoss(priors)
    box = priors[0:1].clone()
    box = torch.cat([box[:, :2] - 0.025, box[:, :2] + 0.025], 1)
    scores = torch.randn(1, 40, 3)
    locs = torch.zeros(1, 40, 4)
    out = loss(locs, scores, [box], [torch.tensor([1])])
    true_locs, true_classes = loss.match([box], [torch.tensor([1])])
    positive = true_classes[0] != 0
    ce = F.cross_entropy(scores[0], true_classes[0], reduction="none")
    n_pos = int(positive.sum())
    hard = ce[~positive].sort(descending=True).values[: 3 * n_pos].sum()
    assert out.conf.item() == pytest.approx(((ce[positive].sum() + hard) / n_pos).item(), rel=1e-5)


def test_reference_l1_option():
    loss = MultiBoxLoss(PRIORS, loc_loss="reference_l1")
    locs = torch.zeros(1, 4, 4)
    locs[0, 0] = torch.tensor([0.5, -2.0, 0.0, 0.0])
    out = loss(locs, torch.zeros(1, 4, 3), [torch.tensor([[0.0, 0.0, 0.5, 0.5]])], [torch.tensor([1])])
    assert out.loc.item() == pytest.approx((0.5 + 2.0) / 4)  # mean over 1 positive x 4 coordinates
    with pytest.raises(ValueError, match="loc_loss"):
        MultiBoxLoss(PRIORS, loc_loss="l2")


def test_batch_is_vectorised_and_consistent():
    from ssd_runtime.priors import make_priors

    torch.manual_seed(0)
    priors = torch.from_numpy(make_priors().copy())
    loss = MultiBoxLoss(priors)
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.5]]), torch.tensor([[0.5, 0.5, 0.9, 0.8], [0.0, 0.2, 0.3, 0.9]])]
    labels = [torch.tensor([3]), torch.tensor([1, 2])]
    locs, scores = torch.randn(2, 8732, 4), torch.randn(2, 8732, 4)
    batch = loss(locs, scores, boxes, labels)
    singles = [loss(locs[i : i + 1], scores[i : i + 1], boxes[i : i + 1], labels[i : i + 1]) for i in range(2)]
    n = [s.num_positives.item() for s in singles]
    assert batch.num_positives.item() == sum(n)
    # Sums over images divided by the batch's positives: recombine the per-image normalized parts.
    expected_conf = sum(s.conf.item() * k for s, k in zip(singles, n)) / sum(n)
    assert batch.conf.item() == pytest.approx(expected_conf, rel=1e-5)


def test_image_without_objects_gives_finite_loss():
    loss = MultiBoxLoss(PRIORS)
    locs = torch.randn(2, 4, 4, requires_grad=True)
    scores = torch.randn(2, 4, 3, requires_grad=True)
    out = loss(locs, scores, [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 0.5, 0.5]])],
               [torch.zeros(0, dtype=torch.long), torch.tensor([2])])
    assert math.isfinite(out.total.item())
    out.total.backward()
    assert torch.isfinite(locs.grad).all() and torch.isfinite(scores.grad).all()
    only_empty = loss(locs[:1], scores[:1], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    assert only_empty.total.item() == 0.0


def test_degenerate_box_names_image_and_object():
    loss = MultiBoxLoss(PRIORS)
    boxes = [torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.3, 0.4, 0.3, 0.6]])]
    labels = [torch.tensor([1]), torch.tensor([1, 2])]
    with pytest.raises(DegenerateBoxError, match=r"image 000042, object 1"):
        loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 3), boxes, labels, image_ids=["000041", "000042"])
    with pytest.raises(DegenerateBoxError, match="batch index 1"):
        loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 3), boxes, labels)


def test_shape_errors():
    loss = MultiBoxLoss(PRIORS)
    with pytest.raises(ValueError, match="expected locs"):
        loss(torch.zeros(1, 5, 4), torch.zeros(1, 5, 3), [torch.zeros(0, 4)], [torch.zeros(0)])
