"""ResNet18 backbone: torchvision-compatible names and shapes, weight loading, norm choices."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from duet.errors import DuetError
from duet.policy.backbone import (
    FrozenBatchNorm2d,
    ResNet18,
    StridedPointwiseConv2d,
    load_backbone_weights,
    read_state_dict,
)

# torchvision.models.resnet18().state_dict().keys(), written out from the architecture
# definition (BasicBlock x [2, 2, 2, 2], downsample on the first block of layers 2-4, fc head).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn1.weight",
    "layer1.1.bn1.bias",
    "layer1.1.bn1.running_mean",
    "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer1.1.bn2.weight",
    "layer1.1.bn2.bias",
    "layer1.1.bn2.running_mean",
    "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn1.weight",
    "layer2.1.bn1.bias",
    "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer2.1.bn2.weight",
    "layer2.1.bn2.bias",
    "layer2.1.bn2.running_mean",
    "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn1.weight",
    "layer3.0.bn1.bias",
    "layer3.0.bn1.running_mean",
    "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.bn2.weight",
    "layer3.0.bn2.bias",
    "layer3.0.bn2.running_mean",
    "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.downsample.0.weight",
    "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias",
    "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var",
    "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn1.weight",
    "layer3.1.bn1.bias",
    "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer3.1.bn2.weight",
    "layer3.1.bn2.bias",
    "layer3.1.bn2.running_mean",
    "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn1.weight",
    "layer4.0.bn1.bias",
    "layer4.0.bn1.running_mean",
    "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.bn2.weight",
    "layer4.0.bn2.bias",
    "layer4.0.bn2.running_mean",
    "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias",
    "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var",
    "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn1.weight",
    "layer4.1.bn1.bias",
    "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
]

# Shapes of a few tensors of torchvision's resnet18 (ImageNet head).
TORCHVISION_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer3.1.conv2.weight": (256, 256, 3, 3),
    "layer4.0.downsample.1.running_var": (512,),
    "layer4.1.bn2.weight": (512,),
    "fc.weight": (1000, 512),
    "fc.bias": (1000,),
}


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_state_dict_keys_match_torchvision(norm):
    sd = ResNet18(norm=norm, with_fc=True).state_dict()
    assert len(TORCHVISION_RESNET18_KEYS) == 122
    assert list(sd) == TORCHVISION_RESNET18_KEYS
    for k, shape in TORCHVISION_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k


def test_group_norm_keeps_names_without_running_stats():
    keys = set(ResNet18(norm="group_norm", with_fc=True).state_dict())
    expected = {
        k
        for k in TORCHVISION_RESNET18_KEYS
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    assert keys == expected


def test_feature_map_shape_and_frozen_bn_has_no_parameters():
    m = ResNet18(norm="frozen_bn", width=8).eval()
    out = m(torch.zeros(2, 3, 96, 128))
    assert out.shape == (2, 64, 3, 4)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert all("bn" not in n and "downsample.1" not in n for n, _ in m.named_parameters())


def test_frozen_bn_matches_batchnorm_in_eval():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    fbn = FrozenBatchNorm2d(6)
    fbn.load_state_dict(bn.state_dict())
    x = torch.randn(3, 6, 5, 5)
    torch.testing.assert_close(fbn(x), bn(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_torchvision_format_weights(tmp_path, suffix):
    torch.manual_seed(0)
    src = ResNet18(norm="bn", width=8, with_fc=True).eval()
    with torch.no_grad():
        for n, b in src.named_buffers():
            if n.endswith("running_mean"):
                b.normal_(0, 0.1)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save(src.state_dict(), path)
    dst = ResNet18(norm="frozen_bn", width=8)  # no fc head: fc.* is reported unused
    unused = load_backbone_weights(dst, path)
    assert unused == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(dst.eval()(x), src(x))
    assert read_state_dict(path).keys() == src.state_dict().keys()


def test_bad_weight_files_give_one_line_errors(tmp_path):
    m = ResNet18(norm="frozen_bn", width=8)
    with pytest.raises(DuetError, match="file not found"):
        load_backbone_weights(m, tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DuetError) as e:
        load_backbone_weights(m, junk)
    assert "\n" not in str(e.value) and "junk.safetensors" in str(e.value)
    wide = {k: v for k, v in ResNet18(norm="bn", width=16).state_dict().items()}
    with pytest.raises(DuetError, match="has shape"):
        load_backbone_weights(m, wide)
    partial = {
        k: v for k, v in ResNet18(norm="bn", width=8).state_dict().items() if not k.startswith("layer4")
    }
    with pytest.raises(DuetError, match="missing key 'layer4"):
        load_backbone_weights(m, partial)
    assert np.isfinite(m(torch.zeros(1, 3, 32, 32)).detach().numpy()).all()


@pytest.mark.parametrize("hw", [(16, 20), (15, 21)])
def test_strided_pointwise_conv_is_a_strided_1x1_conv(hw):
    torch.manual_seed(0)
    conv = StridedPointwiseConv2d(16, 32, 2)
    assert conv.weight.shape == (32, 16, 1, 1) and conv.bias is None and conv.stride == (2, 2)
    x = torch.randn(2, 16, *hw, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    ref_w = conv.weight.detach().clone().requires_grad_(True)
    out, ref = conv(x), F.conv2d(ref_x, ref_w, stride=2)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(conv.weight.grad, ref_w.grad)
    torch.testing.assert_close(x.grad, ref_x.grad)


# torch 2.13 (oneDNN AVX-512 1x1 weight-gradient kernel) corrupted the heap for a strided 1x1 conv
# over few channels of a large channels-last map: the width-8 ResNet's layer2 downsample at
# 240x320 input. Run in a subprocess, so that a native crash fails the test, not pytest.
CHANNELS_LAST_SCRIPT = textwrap.dedent("""
    import torch
    from duet.policy.backbone import ResNet18

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = ResNet18(norm="group_norm", width=8)
    for _ in range(10):
        x = torch.randn(1, 3, 240, 320).to(memory_format=torch.channels_last)
        m(x).square().mean().backward()
    print("backward ok")
""")


@pytest.mark.timeout(120)
def test_narrow_backbone_backward_on_large_channels_last_images(tmp_path):
    script = tmp_path / "channels_last_backward.py"
    script.write_text(CHANNELS_LAST_SCRIPT)
    try:
        p = subprocess.run(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=100,
        )
    except subprocess.TimeoutExpired:  # a corrupted heap can also deadlock inside malloc
        pytest.fail("ResNet18 backward on 240x320 channels-last images hung")
    assert p.returncode == 0 and "backward ok" in p.stdout, f"rc {p.returncode}: {p.stdout[-2000:]}"
