"""ResNet18 image backbone, written here (torchvision is not importable in this environment).

Parameter and buffer names follow torchvision's ``resnet18`` exactly (conv1, bn1, layer1.0.conv1,
..., layer2.0.downsample.0, ..., fc), so ImageNet weights exported from torchvision load with
:func:`load_backbone_weights` (safetensors, or a torch state dict read with
``torch.load(weights_only=True)``).

Normalization layers are selectable:

- ``"frozen_bn"``  batch norm with fixed statistics and affine terms (buffers, never trained;
                   what ACT/DETR use). Keeps the torchvision key set, so weights load 1:1.
- ``"bn"``         ordinary trainable batch norm.
- ``"group_norm"`` GroupNorm with ``channels // 16`` groups (what Diffusion Policy uses: batch
                   statistics and EMA weights do not mix well). Only weight/bias keys exist;
                   running statistics in a loaded file are ignored.

``width`` scales every stage (64 = ResNet18); smaller widths keep the names and the layout and
exist for tests and CPU smoke runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from duet.errors import DuetError
from duet.policy.checkpoint import state_dict_mismatch

NormKind = Literal["frozen_bn", "bn", "group_norm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with statistics and affine parameters fixed (all buffers).

    Keeps ``num_batches_tracked`` so its state dict has the same keys as nn.BatchNorm2d.
    """

    # Buffers (registered in __init__), declared for the type checker.
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "group_norm":
        return nn.GroupNorm(max(1, channels // 16), channels)
    raise DuetError(f"backbone norm {kind!r} is not one of 'frozen_bn', 'bn', 'group_norm'")


class StridedPointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution with a stride, computed as the same 1x1 convolution at stride 1 over the
    subsampled input ``x[..., ::s, ::s]`` (the pixels a strided 1x1 kernel reads; identical result).

    Why: torch 2.13's oneDNN kernel for the weight gradient of a strided 1x1 convolution
    (``jit_avx512_common_1x1_convolution_bwd_weights_t``) corrupts the heap for channels-last
    inputs with fewer than 16 channels and about 48x48 pixels or more (segfault or "double free
    or corruption" in backward: the micro ResNet's layer2 downsample at 240x320). Parameters,
    names and the module's repr are those of ``nn.Conv2d(cin, cout, 1, stride, bias=False)``.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: NormKind):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(StridedPointwiseConv2d(cin, cout, stride), make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet18 with torchvision's names. ``forward`` returns the layer4 feature map
    (B, 8*width, H/32, W/32); ``classify`` runs the ImageNet head (needs ``with_fc``)."""

    # Set in __init__ by name (torchvision's state dict keys), declared for the type checker.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self, norm: NormKind = "frozen_bn", width: int = 64, with_fc: bool = False, num_classes: int = 1000
    ):
        super().__init__()
        if width < 1:
            raise DuetError(f"backbone width {width} must be >= 1 (64 is ResNet18)")
        self.norm_kind = norm
        self.width = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, width * 2, width * 4, width * 8]
        cin = width
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(
                self,
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(cin, c, stride, norm), BasicBlock(c, c, 1, norm)),
            )
            cin = c
        self.out_channels = chans[-1]
        self.fc: nn.Linear | None = nn.Linear(chans[-1], num_classes) if with_fc else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise DuetError("this ResNet18 was built without its fc head (with_fc=False)")
        return self.fc(torch.flatten(self(x).mean(dim=(2, 3)), 1))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file: .safetensors, or a torch state dict (weights_only=True, no pickle)."""
    p = Path(path)
    if not p.is_file():
        raise DuetError(f"backbone weights {p}: file not found (pass a .safetensors or .pth state dict)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a user-fixable bad file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DuetError(
            f"backbone weights {p}: cannot be read ({first}); "
            "export a plain state dict (safetensors or torch.save(model.state_dict()))"
        ) from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DuetError(f"backbone weights {p}: not a flat state dict of tensors")
    return dict(sd)


def load_backbone_weights(model: ResNet18, source: str | Path | Mapping[str, torch.Tensor]) -> list[str]:
    """Copy torchvision-named ResNet18 weights into ``model``.

    Every backbone key must be present with the same shape (fc.* is optional and ignored when
    the model has no head; running statistics are ignored for group_norm). Returns the list of
    file keys that were not used. Raises DuetError naming the first mismatch.
    """
    where = str(source) if isinstance(source, (str, Path)) else "state dict"
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own = model.state_dict()
    why = state_dict_mismatch(own, sd, unexpected=False)
    if why:
        raise DuetError(
            f"backbone weights {where}: {why}; expected a torchvision resnet18 state dict "
            f"(width {model.width})"
        )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(sd[k].to(v.dtype))
    return sorted(k for k in sd if k not in own)
