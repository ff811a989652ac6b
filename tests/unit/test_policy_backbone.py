"""ResNet18 backbone: torchvision-compatible names and shapes, weight loading, norm choices."""

import numpy as np
import pytest
import torch

from duet.errors import DuetError
from duet.policy.backbone import FrozenBatchNorm2d, ResNet18, load_backbone_weights, read_state_dict

# torchvision.models.resnet18().state_dict().keys(), written out from the architecture
# definition (BasicBlock x [2, 2, 2, 2], downsample on the first block of layers 2-4, fc head).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
    "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight", "layer1.0.bn2.weight", "layer1.0.bn2.bias", "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var", "layer1.0.bn2.num_batches_tracked", "layer1.1.conv1.weight",
    "layer1.1.bn1.weight", "layer1.1.bn1.bias", "layer1.1.bn1.running_mean", "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked", "layer1.1.conv2.weight", "layer1.1.bn2.weight",
    "layer1.1.bn2.bias", "layer1.1.bn2.running_mean", "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked", "layer2.0.conv1.weight", "layer2.0.bn1.weight",
    "layer2.0.bn1.bias", "layer2.0.bn1.running_mean", "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked", "layer2.0.conv2.weight", "layer2.0.bn2.weight",
    "layer2.0.bn2.bias", "layer2.0.bn2.running_mean", "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias", "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var", "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight", "layer2.1.bn1.weight", "layer2.1.bn1.bias", "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var", "layer2.1.bn1.num_batches_tracked", "layer2.1.conv2.weight",
    "layer2.1.bn2.weight", "layer2.1.bn2.bias", "layer2.1.bn2.running_mean", "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked", "layer3.0.conv1.weight", "layer3.0.bn1.weight",
    "layer3.0.bn1.bias", "layer3.0.bn1.running_mean", "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked", "layer3.0.conv2.weight", "layer3.0.bn2.weight",
    "layer3.0.bn2.bias", "layer3.0.bn2.running_mean", "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked", "layer3.0.downsample.0.weight", "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias", "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var", "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight", "layer3.1.bn1.weight", "layer3.1.bn1.bias", "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var", "layer3.1.bn1.num_batches_tracked", "layer3.1.conv2.weight",
    "layer3.1.bn2.weight", "layer3.1.bn2.bias", "layer3.1.bn2.running_mean", "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked", "layer4.0.conv1.weight", "layer4.0.bn1.weight",
    "layer4.0.bn1.bias", "layer4.0.bn1.running_mean", "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked", "layer4.0.conv2.weight", "layer4.0.bn2.weight",
    "layer4.0.bn2.bias", "layer4.0.bn2.running_mean", "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked", "layer4.0.downsample.0.weight", "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias", "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var", "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight", "layer4.1.bn1.weight", "layer4.1.bn1.bias", "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var", "layer4.1.bn1.num_batches_tracked", "layer4.1.conv2.weight",
    "layer4.1.bn2.weight", "layer4.1.bn2.bias", "layer4.1.bn2.running_mean", "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias",
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
    expected = {k for k in TORCHVISION_RESNET18_KEYS if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
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
    partial = {k: v for k, v in ResNet18(norm="bn", width=8).state_dict().items() if not k.startswith("layer4")}
    with pytest.raises(DuetError, match="missing key 'layer4"):
        load_backbone_weights(m, partial)
    assert np.isfinite(m(torch.zeros(1, 3, 32, 32)).detach().numpy()).all()
