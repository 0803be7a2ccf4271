"""The PyTorch-checkpoint backend (found by the runtime registry by name)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssd_runtime.backends import Backend, backend_class
from ssd_runtime.preprocess import InputError
from ssd_train.backend import TorchCheckpointBackend
from ssd_train.checkpoint import load_model


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(3))


def test_registry_finds_it(runtime_checkpoint):
    assert backend_class("torch") is TorchCheckpointBackend
    backend = TorchCheckpointBackend.load(runtime_checkpoint)
    assert isinstance(backend, Backend)
    assert backend.input_kind == "float32-nchw" and backend.device == "cpu" and not backend.channels_last


def test_infer_equals_the_model(runtime_checkpoint, batch):
    backend = TorchCheckpointBackend.load(runtime_checkpoint)
    model, spec = load_model(runtime_checkpoint)
    assert backend.spec == spec
    with torch.no_grad():
        expected = model(batch)
    for given in (batch, batch.numpy()):
        locs, logits = backend.infer(given)
        assert locs.dtype == torch.float32 and logits.shape == (2, 8732, spec.num_classes)
        torch.testing.assert_close(locs, expected[0])
        torch.testing.assert_close(logits, expected[1])
    # channels_last on the CPU gives the same values up to float rounding
    locs, logits = TorchCheckpointBackend.load(runtime_checkpoint, channels_last=True).infer(batch)
    torch.testing.assert_close(logits, expected[1], rtol=1e-4, atol=1e-4)


def test_fp16_keeps_the_norm_in_fp32(runtime_checkpoint, batch):
    backend = TorchCheckpointBackend.load(runtime_checkpoint, fp16=True)
    assert backend.model.base.conv1_1.weight.dtype == torch.float16
    assert backend.model.rescale_factors.dtype == torch.float32
    locs, logits = backend.infer(batch[:1])
    reference = TorchCheckpointBackend.load(runtime_checkpoint).infer(batch[:1])[1]
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()


def test_wrong_input_and_options(runtime_checkpoint):
    backend = TorchCheckpointBackend.load(runtime_checkpoint)
    with pytest.raises(InputError, match=r"expects float32 \(N, 3, 300, 300\).*received float64 \(1, 3, 300, 300\)"):
        backend.infer(np.zeros((1, 3, 300, 300)))
    with pytest.raises(InputError, match=r"received uint8 \(1, 300, 300, 3\)"):
        backend.infer(np.zeros((1, 300, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        TorchCheckpointBackend.load(runtime_checkpoint, cuda_graph=True)
    with pytest.raises(ValueError, match="device must be"):
        TorchCheckpointBackend.load(runtime_checkpoint, device="mps")


@pytest.mark.gpu
def test_cuda_graph_and_fp16_on_the_gpu(runtime_checkpoint, batch):
    from ssd_runtime.postprocess import compare_detections, postprocess
    from ssd_runtime.postprocess_torch import postprocess_torch

    eager = TorchCheckpointBackend.load(runtime_checkpoint, device="cuda")
    graph = TorchCheckpointBackend.load(runtime_checkpoint, device="cuda", cuda_graph=True)
    locs, logits = eager.infer(batch)
    g_locs, g_logits = graph.infer(batch)
    torch.testing.assert_close(g_logits, logits, rtol=1e-3, atol=1e-3)
    settings = eager.spec.evaluation
    reference = postprocess(locs.cpu().numpy(), logits.cpu().numpy(), eager.spec.make_priors(), settings)
    assert compare_detections(reference, postprocess_torch(locs, logits, eager.priors, settings), settings).identical
    # network + padded postprocess in one graph
    runner = graph.capture(2, settings, max_candidates=512, nms_iterations=16)
    padded = runner.run(batch.cuda().contiguous(memory_format=torch.channels_last))
    torch.cuda.synchronize()
    exact = padded.exact.cpu().numpy()
    got = padded.to_list()
    g_ref = postprocess(g_locs.cpu().numpy(), g_logits.cpu().numpy(), eager.spec.make_priors(), settings)
    for n in np.flatnonzero(exact):
        assert compare_detections([g_ref[n]], [got[n]], settings).identical
    fp16 = TorchCheckpointBackend.load(runtime_checkpoint, device="cuda", fp16=True, cuda_graph=True)
    h_locs, h_logits = fp16.infer(batch)
    assert torch.isfinite(h_logits).all()


def test_batch_norm_checkpoint_is_served_folded(tmp_path, batch):
    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300

    torch.manual_seed(0)
    spec = ModelSpec.create(["background", "a", "b"], width=0.125, norm="batch")
    model = SSD300.from_spec(spec).train()
    with torch.no_grad():  # running statistics that are not the identity
        model(batch * 2 + 1)
    path = save_checkpoint(tmp_path / "bn.pt", model.eval(), spec)
    with torch.no_grad():
        expected = model(batch)
    for fp16 in (False, True):
        backend = TorchCheckpointBackend.load(path, fp16=fp16)
        assert not [m for m in backend.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        locs, logits = backend.infer(batch)
        scale = expected[1].abs().max()
        tolerance = 5e-3 * scale if fp16 else 1e-5 * scale
        assert (logits - expected[1]).abs().max() <= tolerance and (locs - expected[0]).abs().max() <= tolerance * 2
