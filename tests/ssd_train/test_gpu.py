"""GPU checks of the network and the loss (run by scripts/gpu_check.sh; skipped without CUDA)."""
import pytest
import torch

from ssd_train import SSD300, MultiBoxLoss

pytestmark = pytest.mark.gpu


def test_forward_and_loss_match_cpu():
    torch.manual_seed(0)
    model = SSD300(21, width=0.5).eval()
    images = torch.randn(2, 3, 300, 300)
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.6]]), torch.tensor([[0.3, 0.2, 0.9, 0.8], [0.0, 0.0, 0.2, 0.3]])]
    labels = [torch.tensor([4]), torch.tensor([1, 20])]
    with torch.no_grad():
        cpu_out = model(images)
        cpu_loss = MultiBoxLoss(model.priors_cxcy)(*cpu_out, boxes, labels)
        gpu_model = model.cuda()
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        gpu_out = gpu_model(images.cuda())
        gpu_loss = MultiBoxLoss(gpu_model.priors_cxcy)(*gpu_out, [b.cuda() for b in boxes], [lab.cuda() for lab in labels])
    for c, g in zip(cpu_out, gpu_out):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-3, atol=1e-3)
    assert gpu_loss.num_positives.item() == cpu_loss.num_positives.item()
    torch.testing.assert_close(gpu_loss.total.cpu(), cpu_loss.total, rtol=1e-3, atol=1e-3)


def test_amp_bf16_training_step_is_finite():
    model = SSD300(21).cuda().to(memory_format=torch.channels_last)
    criterion = MultiBoxLoss(model.priors_cxcy)
    images = torch.randn(4, 3, 300, 300, device="cuda").contiguous(memory_format=torch.channels_last)
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.6]], device="cuda")] * 4
    labels = [torch.tensor([3], device="cuda")] * 4
    with torch.autocast("cuda", dtype=torch.bfloat16):
        locs, logits = model(images)
    parts = criterion(locs, logits, boxes, labels)
    parts.total.backward()
    assert torch.isfinite(parts.total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
