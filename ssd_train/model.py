"""The SSD300 network (VGG-16 base), as in the reference design (``docs/reference.md``).

``forward(images) -> (locs, class_logits)`` and nothing else: loss and postprocess are separate.
Parameter names follow the reference tutorial (``base``, ``aux_convs``, ``pred_convs``,
``rescale_factors``) so its released weights map by name.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ssd_runtime.priors import PriorConfig, make_priors
from ssd_runtime.spec import NORMS, ModelSpec

#: Channels of the maps that feed the prediction heads, at width 1.0, in map order.
SOURCE_CHANNELS = {"conv4_3": 512, "conv7": 1024, "conv8_2": 512, "conv9_2": 256, "conv10_2": 256, "conv11_2": 256}
L2NORM_INIT_SCALE = 20.0
L2NORM_EPS = 1e-10

#: torchvision VGG-16 state-dict prefix of each of our base convolutions (mapped by name).
VGG16_NAMES = {
    "conv1_1": "features.0", "conv1_2": "features.2",
    "conv2_1": "features.5", "conv2_2": "features.7",
    "conv3_1": "features.10", "conv3_2": "features.12", "conv3_3": "features.14",
    "conv4_1": "features.17", "conv4_2": "features.19", "conv4_3": "features.21",
    "conv5_1": "features.24", "conv5_2": "features.26", "conv5_3": "features.28",
}  # fmt: skip


class VGGWeightsError(FileNotFoundError):
    """The VGG-16 weights file is missing or is not a torchvision VGG-16 state dict."""


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def _conv(c_in: int, c_out: int, kernel: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=kernel, **kwargs)


#: Convolutions without a BatchNorm under each norm mode (``None``: no norms at all).
WITHOUT_NORM: dict[str, tuple[str, ...] | None] = {
    "none": None, "batch": (), "batch-from-conv2": ("conv1_1", "conv1_2"),
}  # fmt: skip


class _ConvStack(nn.Module):
    """Holds named convolutions; ``act(name, x)`` is relu(conv(x)), with a BatchNorm between where ``norm`` puts one."""

    def _add_norms(self, norm: str) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        skip = WITHOUT_NORM[norm]
        self.norm = nn.ModuleDict({
            name: nn.BatchNorm2d(module.out_channels)
            for name, module in self.named_children() if isinstance(module, nn.Conv2d) and name not in skip
        }) if skip is not None else None  # fmt: skip

    def fold_norms(self) -> None:
        """Fold each BatchNorm into its convolution (inference only: the running statistics are frozen)."""
        if self.norm is None:
            return
        for name, norm in self.norm.items():
            setattr(self, name, fuse_conv_bn_eval(getattr(self, name).eval(), norm.eval()))
        self.norm = None

    def act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, name)(x)
        if self.norm is not None and name in self.norm:
            x = self.norm[name](x)
        # In place: x is this layer's own fresh output, and neither a convolution nor a BatchNorm keeps
        # its output for the backward pass (saves a full-size copy per layer: ~10% of a CPU step).
        return F.relu(x, inplace=True)


class VGGBase(_ConvStack):
    """VGG-16 conv1_1..conv5_3, then conv6 (dilated 3x3) and conv7 (1x1) replacing fc6/fc7."""

    def __init__(self, width: float = 1.0, norm: str = "none") -> None:
        super().__init__()
        c = lambda n: scaled(n, width)  # noqa: E731
        self.conv1_1 = _conv(3, c(64), 3, padding=1)
        self.conv1_2 = _conv(c(64), c(64), 3, padding=1)
        self.conv2_1 = _conv(c(64), c(128), 3, padding=1)
        self.conv2_2 = _conv(c(128), c(128), 3, padding=1)
        self.conv3_1 = _conv(c(128), c(256), 3, padding=1)
        self.conv3_2 = _conv(c(256), c(256), 3, padding=1)
        self.conv3_3 = _conv(c(256), c(256), 3, padding=1)
        self.conv4_1 = _conv(c(256), c(512), 3, padding=1)
        self.conv4_2 = _conv(c(512), c(512), 3, padding=1)
        self.conv4_3 = _conv(c(512), c(512), 3, padding=1)
        self.conv5_1 = _conv(c(512), c(512), 3, padding=1)
        self.conv5_2 = _conv(c(512), c(512), 3, padding=1)
        self.conv5_3 = _conv(c(512), c(512), 3, padding=1)
        self.conv6 = _conv(c(512), c(1024), 3, padding=6, dilation=6)
        self.conv7 = _conv(c(1024), c(1024), 1)
        self._add_norms(norm)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 300, 300) -> conv4_3 (N, 512w, 38, 38), conv7 (N, 1024w, 19, 19), after ReLU."""
        x = self.act("conv1_1", images)
        x = F.max_pool2d(self.act("conv1_2", x), 2, 2)  # 150
        x = self.act("conv2_1", x)
        x = F.max_pool2d(self.act("conv2_2", x), 2, 2)  # 75
        x = self.act("conv3_1", x)
        x = self.act("conv3_2", x)
        x = F.max_pool2d(self.act("conv3_3", x), 2, 2, ceil_mode=True)  # 38
        x = self.act("conv4_1", x)
        x = self.act("conv4_2", x)
        conv4_3 = self.act("conv4_3", x)
        x = F.max_pool2d(conv4_3, 2, 2)  # 19
        x = self.act("conv5_1", x)
        x = self.act("conv5_2", x)
        x = F.max_pool2d(self.act("conv5_3", x), 3, 1, padding=1)  # stays 19
        x = self.act("conv6", x)
        conv7 = self.act("conv7", x)
        return conv4_3, conv7


class AuxiliaryConvolutions(_ConvStack):
    """conv8_1..conv11_2: the extra maps 10x10, 5x5, 3x3, 1x1."""

    def __init__(self, width: float = 1.0, norm: str = "none") -> None:
        super().__init__()
        c = lambda n: scaled(n, width)  # noqa: E731
        self.conv8_1 = _conv(c(1024), c(256), 1)
        self.conv8_2 = _conv(c(256), c(512), 3, stride=2, padding=1)
        self.conv9_1 = _conv(c(512), c(128), 1)
        self.conv9_2 = _conv(c(128), c(256), 3, stride=2, padding=1)
        self.conv10_1 = _conv(c(256), c(128), 1)
        self.conv10_2 = _conv(c(128), c(256), 3)
        self.conv11_1 = _conv(c(256), c(128), 1)
        self.conv11_2 = _conv(c(128), c(256), 3)
        self._add_norms(norm)

    def forward(self, conv7: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.act("conv8_1", conv7)
        conv8_2 = self.act("conv8_2", x)  # 10
        x = self.act("conv9_1", conv8_2)
        conv9_2 = self.act("conv9_2", x)  # 5
        x = self.act("conv10_1", conv9_2)
        conv10_2 = self.act("conv10_2", x)  # 3
        x = self.act("conv11_1", conv10_2)
        conv11_2 = self.act("conv11_2", x)  # 1
        return conv8_2, conv9_2, conv10_2, conv11_2


class PredictionConvolutions(nn.Module):
    """3x3 localisation and class heads on the six source maps."""

    def __init__(self, num_classes: int, boxes_per_location: tuple[int, ...], width: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        for (name, channels), boxes in zip(SOURCE_CHANNELS.items(), boxes_per_location, strict=True):
            setattr(self, f"loc_{name}", _conv(scaled(channels, width), boxes * 4, 3, padding=1))
            setattr(self, f"cl_{name}", _conv(scaled(channels, width), boxes * num_classes, 3, padding=1))

    def forward(self, sources: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        n = sources[0].shape[0]
        locs, logits = [], []
        for name, x in zip(SOURCE_CHANNELS, sources, strict=True):
            # (N, A*4, H, W) -> (N, H, W, A*4) -> (N, H*W*A, 4)
            locs.append(getattr(self, f"loc_{name}")(x).permute(0, 2, 3, 1).reshape(n, -1, 4))
            # (N, A*C, H, W) -> (N, H, W, A*C) -> (N, H*W*A, C)
            logits.append(getattr(self, f"cl_{name}")(x).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes))
        return torch.cat(locs, 1), torch.cat(logits, 1)


def _num_classes(num_classes: int | None, n_classes: int | None, default: int = 21) -> int:
    """``num_classes`` or its alias ``n_classes`` (the reference tutorial's name); the two disagreeing is an error."""
    if n_classes is None:
        return default if num_classes is None else int(num_classes)
    if num_classes is not None and int(num_classes) != int(n_classes):
        raise TypeError(f"num_classes={num_classes} and its alias n_classes={n_classes} disagree; pass num_classes")
    return int(n_classes)


class SSD300(nn.Module):
    """SSD300 with a VGG-16 base.

    Args:
        num_classes: classes including background (default 21, Pascal VOC). ``n_classes=`` (the
            reference tutorial's name) is accepted as a keyword alias.
        width: channel multiplier; 1.0 is the reference network (26,285,486 parameters at 21 classes).
            Other widths keep the geometry (8732 priors) for fast CPU training and tests.
        prior_config: prior geometry (default: the reference's).
        vgg_weights: path of a torchvision VGG-16 state dict (``vgg16-397923af.pth``) to initialise the
            base from, with fc6/fc7 decimated into conv6/conv7; ``None`` for a random initialisation.
        norm: "none" (the reference), "batch": a BatchNorm after every base and extra convolution,
            which trains much faster from a random initialisation, or "batch-from-conv2": the same
            without the two full-resolution convolutions (cheaper on the CPU); :meth:`fold_norms`
            folds them away.

    forward: images float32 (N, 3, 300, 300), normalized RGB ->
        locs (N, 8732, 4) box offsets against ``priors_cxcy``, class_logits (N, 8732, num_classes).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        width: float = 1.0,
        prior_config: PriorConfig | None = None,
        vgg_weights: str | Path | None = None,
        norm: str = "none",
        *,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = _num_classes(num_classes, n_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and needs to be >= 2, got {num_classes}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.num_classes = num_classes
        self.width = float(width)
        self.prior_config = prior_config or PriorConfig()
        if len(self.prior_config.feature_map_sizes) != len(SOURCE_CHANNELS):
            raise ValueError(f"SSD300 has {len(SOURCE_CHANNELS)} prediction maps; the prior config has "
                             f"{len(self.prior_config.feature_map_sizes)}")
        self.norm = norm
        self.base = VGGBase(width, norm)
        self.aux_convs = AuxiliaryConvolutions(width, norm)
        self.pred_convs = PredictionConvolutions(num_classes, self.prior_config.boxes_per_location, width)
        self.rescale_factors = nn.Parameter(torch.full((1, scaled(512, width), 1, 1), L2NORM_INIT_SCALE))
        self.register_buffer(
            "priors_cxcy", torch.from_numpy(make_priors(self.prior_config).copy()), persistent=False
        )
        self._init_weights()
        if vgg_weights is not None:
            load_vgg16_weights(self, vgg_weights)

    @classmethod
    def from_spec(cls, spec: ModelSpec, vgg_weights: str | Path | None = None) -> SSD300:
        """The network a spec describes (classes, width, priors)."""
        return cls(spec.num_classes, spec.width, spec.priors, vgg_weights, norm=spec.norm)

    def fold_norms(self) -> SSD300:
        """Fold the BatchNorms into the convolutions for inference (same outputs in eval mode); returns self."""
        self.base.fold_norms()
        self.aux_convs.fold_norms()
        return self

    def init_class_heads_background(self, background: float = 0.99) -> None:
        """Start every prior at P(background) = ``background``: class-head weights N(0, 0.01), biases set.

        Not the reference's (Xavier) initialisation: with it a fresh network's confidence loss starts
        near 30-40 and the first ~50 iterations of a short run are spent bringing it down; this start
        (the prior-probability initialisation of RetinaNet, applied to the softmax) begins near the answer
        for the 99% of priors that are background.
        """
        if not 0.0 < background < 1.0:
            raise ValueError(f"background must be in (0, 1), got {background}")
        others = self.num_classes - 1
        for name, module in self.pred_convs.named_children():
            if name.startswith("cl_"):
                nn.init.normal_(module.weight, std=0.01)
                bias = module.bias.data.view(-1, self.num_classes)
                bias.zero_()
                bias[:, 0] = math.log(background * others / (1.0 - background))

    def _init_weights(self) -> None:
        for module in self.base.modules():
            if isinstance(module, nn.Conv2d):  # torchvision's VGG initialisation
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for module in [*self.aux_convs.modules(), *self.pred_convs.modules()]:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv4_3, conv7 = self.base(images)
        conv4_3 = l2_normalize(conv4_3) * self.rescale_factors
        sources = (conv4_3, conv7, *self.aux_convs(conv7))
        return self.pred_convs(sources)


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """L2-normalize (N, C, H, W) over channels; the epsilon (absent in the reference) guards all-zero cells."""
    return features / features.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(L2NORM_EPS)


def decimate(tensor: torch.Tensor, steps: tuple[int | None, ...]) -> torch.Tensor:
    """Keep indices 0, m, 2m, ... along each dimension with a step m (None keeps the dimension)."""
    for dim, step in enumerate(steps):
        if step is not None:
            index = torch.arange(0, tensor.shape[dim], step, device=tensor.device)
            tensor = tensor.index_select(dim, index)
    return tensor


def vgg16_to_ssd_base(vgg_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision VGG-16 state dict onto ``VGGBase`` parameter names (fc6/fc7 decimated)."""
    missing = [f"{p}.{t}" for p in [*VGG16_NAMES.values(), "classifier.0", "classifier.3"]
               for t in ("weight", "bias") if f"{p}.{t}" not in vgg_state]
    if missing:
        raise KeyError(f"not a torchvision VGG-16 state dict: missing {missing[:4]}"
                       f"{' ...' if len(missing) > 4 else ''}")
    out = {}
    for ours, theirs in VGG16_NAMES.items():
        out[f"{ours}.weight"] = vgg_state[f"{theirs}.weight"]
        out[f"{ours}.bias"] = vgg_state[f"{theirs}.bias"]
    fc6_w = vgg_state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    fc7_w = vgg_state["classifier.3.weight"].reshape(4096, 4096, 1, 1)
    out["conv6.weight"] = decimate(fc6_w, (4, None, 3, 3))  # (1024, 512, 3, 3)
    out["conv6.bias"] = decimate(vgg_state["classifier.0.bias"], (4,))  # (1024,)
    out["conv7.weight"] = decimate(fc7_w, (4, 4, None, None))  # (1024, 1024, 1, 1)
    out["conv7.bias"] = decimate(vgg_state["classifier.3.bias"], (4,))  # (1024,)
    return out


def load_vgg16_weights(model: SSD300, path: str | Path) -> None:
    """Initialise ``model.base`` from a local torchvision VGG-16 state-dict file (width 1.0 only)."""
    path = Path(path)
    if not path.is_file():
        raise VGGWeightsError(
            f"VGG-16 weights file not found: {path}. Nothing can be downloaded here: copy torchvision's "
            "vgg16-397923af.pth (ImageNet weights) to this path, or train from a random initialisation "
            "by leaving the VGG weights unset."
        )
    if model.width != 1.0:
        raise ValueError(f"pretrained VGG-16 weights fit width 1.0 only; this model has width {model.width}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VGGWeightsError(f"cannot read VGG-16 weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        mapped = vgg16_to_ssd_base(state)
    except KeyError as exc:
        raise VGGWeightsError(f"{path}: {exc.args[0]}") from exc
    own = model.base.state_dict()
    bad = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise VGGWeightsError(f"{path}: shape mismatch for {bad[:4]}: not a VGG-16 (16-layer, 1000-class) file")
    model.base.load_state_dict(mapped, strict=True)


class FP16Network(nn.Module):
    """SSD300 in FP16 with the overflow-prone L2 norm of conv4_3 in FP32; FP32 input and outputs.

    The conv4_3 norm sums 512 squares per location: with activations above ~11 that sum passes FP16's
    65,504 and a naive FP16 network returns inf/NaN. Here conv4_3 is cast to FP32, normalized and
    rescaled in FP32, and cast back (normalized values are at most the rescale factor, ~20). No softmax
    (the postprocess applies it in FP32). Used by the PyTorch-checkpoint backend (``fp16=True``); the
    ONNX exporter's FP16 wrapper has the same semantics.
    """

    def __init__(self, model: SSD300) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval().fold_norms()  # BatchNorm statistics would not survive FP16
        self.base = model.base.half()
        self.aux_convs = model.aux_convs.half()
        self.pred_convs = model.pred_convs.half()
        self.rescale_factors = nn.Parameter(model.rescale_factors.detach().float().clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv4_3, conv7 = self.base(images.to(torch.float16))
        conv4_3 = (l2_normalize(conv4_3.to(torch.float32)) * self.rescale_factors).to(torch.float16)
        sources = (conv4_3, conv7, *self.aux_convs(conv7))
        locs, class_logits = self.pred_convs(sources)
        return locs.to(torch.float32), class_logits.to(torch.float32)
