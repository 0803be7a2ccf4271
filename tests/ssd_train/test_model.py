import numpy as np
import pytest
import torch
import torchvision

from ssd_runtime import ModelSpec, make_priors
from ssd_train import SSD300
from ssd_train.model import VGGWeightsError, decimate


@pytest.fixture(scope="module")
def reference_model():
    torch.manual_seed(0)
    return SSD300(num_classes=21).eval()


def test_parameter_count(reference_model):
    assert sum(p.numel() for p in reference_model.parameters()) == 26_285_486


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes(reference_model, batch):
    with torch.inference_mode():
        locs, logits = reference_model(torch.randn(batch, 3, 300, 300))
    assert locs.shape == (batch, 8732, 4)
    assert logits.shape == (batch, 8732, 21)
    assert torch.isfinite(locs).all() and torch.isfinite(logits).all()


def test_width_keeps_geometry():
    model = SSD300(num_classes=7, width=0.125).eval()
    with torch.inference_mode():
        locs, logits = model(torch.randn(2, 3, 300, 300))
    assert locs.shape == (2, 8732, 4) and logits.shape == (2, 8732, 7)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_priors_buffer_and_l2norm_scale(reference_model):
    np.testing.assert_array_equal(reference_model.priors_cxcy.numpy(), make_priors())
    assert "priors_cxcy" not in reference_model.state_dict()  # derived from the spec, not stored
    assert torch.all(reference_model.rescale_factors == 20.0)
    assert reference_model.rescale_factors.shape == (1, 512, 1, 1)


def test_l2norm_survives_all_zero_features():
    model = SSD300(num_classes=3, width=0.125).eval()
    with torch.inference_mode():
        locs, logits = model(torch.full((1, 3, 300, 300), -10.0))  # ReLUs can zero conv4_3 entirely
    assert torch.isfinite(locs).all() and torch.isfinite(logits).all()


def test_from_spec():
    spec = ModelSpec.create(["background", "a", "b"], width=0.25)
    model = SSD300.from_spec(spec)
    assert model.num_classes == 3 and model.width == 0.25


def test_n_classes_is_a_keyword_alias_of_num_classes():
    model = SSD300(n_classes=4, width=0.125)  # the reference tutorial's name
    assert model.num_classes == 4 and model.pred_convs.num_classes == 4
    assert SSD300(4, width=0.125).num_classes == 4 and SSD300(width=0.125).num_classes == 21
    assert SSD300(num_classes=4, n_classes=4, width=0.125).num_classes == 4
    with pytest.raises(TypeError, match="disagree"):
        SSD300(num_classes=4, n_classes=5, width=0.125)
    with pytest.raises(ValueError, match="num_classes counts background"):
        SSD300(n_classes=1, width=0.125)


def test_vgg_decimation_from_a_file(tmp_path):
    torch.manual_seed(1)
    vgg_state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(vgg_state, path)
    model = SSD300(num_classes=21, vgg_weights=path)
    base = model.base
    torch.testing.assert_close(base.conv1_1.weight, vgg_state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(base.conv4_3.bias, vgg_state["features.21.bias"], rtol=0, atol=0)
    torch.testing.assert_close(base.conv5_3.weight, vgg_state["features.28.weight"], rtol=0, atol=0)
    fc6 = vgg_state["classifier.0.weight"].view(4096, 512, 7, 7)
    torch.testing.assert_close(base.conv6.weight, fc6[::4, :, ::3, ::3], rtol=0, atol=0)
    torch.testing.assert_close(base.conv6.bias, vgg_state["classifier.0.bias"][::4], rtol=0, atol=0)
    fc7 = vgg_state["classifier.3.weight"].view(4096, 4096, 1, 1)
    torch.testing.assert_close(base.conv7.weight, fc7[::4, ::4], rtol=0, atol=0)
    torch.testing.assert_close(base.conv7.bias, vgg_state["classifier.3.bias"][::4], rtol=0, atol=0)
    assert base.conv6.weight.shape == (1024, 512, 3, 3) and base.conv7.weight.shape == (1024, 1024, 1, 1)


def test_vgg_mapping_is_by_name_not_position(tmp_path):
    vgg_state = torchvision.models.vgg16(weights=None).state_dict()
    shuffled = dict(reversed(list(vgg_state.items())))
    path = tmp_path / "vgg16_reordered.pth"
    torch.save(shuffled, path)
    model = SSD300(vgg_weights=path)
    torch.testing.assert_close(model.base.conv1_1.weight, vgg_state["features.0.weight"], rtol=0, atol=0)


def test_missing_vgg_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    with pytest.raises(VGGWeightsError, match="vgg16-397923af.pth") as info:
        SSD300(vgg_weights=missing)
    assert "random initialisation" in str(info.value)


def test_wrong_vgg_file_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(VGGWeightsError, match="not a torchvision VGG-16"):
        SSD300(vgg_weights=path)


def test_decimate():
    x = torch.arange(24).view(4, 6)
    torch.testing.assert_close(decimate(x, (2, 3)), x[::2, ::3])


def _train_norm_statistics(model: SSD300) -> None:
    """A few training-mode forwards so the BatchNorm running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(torch.randn(4, 3, 300, 300, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5)
    model.eval()


@pytest.mark.parametrize("norm, unnormed", [("batch", set()), ("batch-from-conv2", {"conv1_1", "conv1_2"})])
def test_batch_norm_option_keeps_the_weight_names_and_folds_away(norm, unnormed):
    torch.manual_seed(0)
    plain = SSD300(num_classes=4, width=0.125)
    model = SSD300(num_classes=4, width=0.125, norm=norm)
    names = set(model.state_dict())
    assert set(plain.state_dict()) < names  # the reference names are kept, the norms added
    assert {n for n in names - set(plain.state_dict())} == {
        n for n in names if ".norm." in n
    }
    convs = set(model.base.norm) | set(model.aux_convs.norm)
    assert len(convs) == 15 + 8 - len(unnormed) and not convs & unnormed
    assert len([m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 15 + 8 - len(unnormed)
    model.train()  # the in-place ReLUs must leave every tensor the backward pass needs intact
    images = torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(3))
    locs, logits = model(images)
    (locs.square().mean() + logits.square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    _train_norm_statistics(model)
    x = torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        expected = model(x)
        model.fold_norms()
        folded = model(x)
    assert not [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for a, b in zip(expected, folded):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "batch-from-conv2"])
def test_norm_comes_from_the_spec_and_is_checked(norm):
    spec = ModelSpec.create(["background", "a"], width=0.125, norm=norm)
    assert SSD300.from_spec(spec).norm == norm
    assert ModelSpec.from_dict(spec.to_dict()).norm == norm
    with pytest.raises(ValueError, match="norm must be one of"):
        SSD300(num_classes=2, width=0.125, norm="group")


def test_background_head_init_starts_every_prior_near_background():
    torch.manual_seed(0)
    model = SSD300(num_classes=8, width=0.125, norm="batch").eval()
    model.init_class_heads_background(0.99)
    with torch.inference_mode():
        _, logits = model(torch.randn(2, 3, 300, 300))
    background = logits.softmax(-1)[..., 0]
    assert background.min() > 0.95 and abs(background.mean().item() - 0.99) < 0.01
    with pytest.raises(ValueError, match="background must be in"):
        model.init_class_heads_background(1.0)
