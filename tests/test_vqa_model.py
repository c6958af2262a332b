"""The VQA model on tiny configs: shapes, normalisation, attention, loss, padding, overfitting."""

import math

import pytest
import torch
import torch.nn.functional as F

from vqa.data import collate, pad_questions
from vqa.model import VQAConfig, VQANet, evidence, soft_score_loss, vqa_loss

B, T, D, K, V = 3, 5, 12, 7, 20


def tiny(**overrides) -> VQANet:
    torch.manual_seed(0)
    config = VQAConfig(
        question_vocab_size=V,
        num_answers=K,
        encoder_dim=D,
        grid=[2, 3],
        position_dim=4,
        embed_dim=8,
        hidden_dim=10,
        attention_dim=9,
        classifier_dim=16,
        dropout=0.0,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return VQANet(config).eval()


def batch(b: int = B, t: int = T):
    torch.manual_seed(1)
    features = torch.randn(b, 6, D) * 5  # (B, P, D), P = 2 x 3
    questions = torch.randint(4, V, (b, t))  # (B, T), no padding
    return features, questions


@pytest.mark.parametrize("glimpses, evidence_on, layers", [(1, True, 1), (2, False, 1), (3, True, 2), (2, True, 0)])
def test_shapes(glimpses, evidence_on, layers):
    net = tiny(glimpses=glimpses, evidence=evidence_on, classifier_layers=layers)
    features, questions = batch()
    logits, attention = net(features, questions)
    assert logits.shape == (B, K)
    assert attention.shape == (B, glimpses, 6)


def test_image_regions_are_l2_normalised_then_positioned():
    net = tiny()
    features, _ = batch()
    image = net.image(features)  # (B, P, D + C)
    assert image.shape == (B, 6, D + 4)
    assert torch.allclose(image[..., :D].norm(dim=-1), torch.ones(B, 6), atol=1e-5)
    # The position part is the same for every image and differs between cells.
    assert torch.equal(image[0, :, D:], image[1, :, D:])
    assert not torch.allclose(image[0, 0, D:], image[0, 1, D:])
    # Scaling a region's features changes nothing: only directions count.
    scaled = features.clone()
    scaled[:, 2] *= 7.0
    assert torch.allclose(net(scaled, batch()[1])[0], net(features, batch()[1])[0], atol=1e-5)


def test_attention_sums_to_one_per_glimpse():
    net = tiny(glimpses=2)
    features, questions = batch()
    _, attention = net(features, questions)
    assert (attention >= 0).all()
    assert torch.allclose(attention.sum(-1), torch.ones(B, 2), atol=1e-6)


def test_evidence_by_hand():
    scores = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]]])  # (B=1, G=2, P=4)
    peak, share = evidence(scores).view(2, 2)
    assert peak[0].item() == pytest.approx(0.0, abs=1e-6)  # flat scores: no peak
    assert peak[1].item() == pytest.approx(math.log((math.exp(4) + 3) / 4))
    assert share[0].item() == pytest.approx(0.5)
    assert share[1].item() == pytest.approx((1 / (1 + math.exp(-4)) + 1.5) / 4)


def test_soft_score_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.6]])
    # log softmax of row 0: x - log(e^2 + 1 + e^-1); of row 1: -log 3.
    lse = math.log(math.exp(2) + 1 + math.exp(-1))
    row0 = -(1.0 / 1.3 * (2 - lse) + 0.3 / 1.3 * (0 - lse))
    row1 = math.log(3)
    assert soft_score_loss(logits, targets).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # With one-hot targets it is the cross-entropy, and "exact" is the cross-entropy.
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ce = F.cross_entropy(logits, torch.tensor([1, 2]))
    assert torch.allclose(soft_score_loss(logits, one_hot), ce)
    assert torch.allclose(vqa_loss(logits, one_hot, "exact"), ce)


def test_padding_does_not_change_the_answer():
    net = tiny()
    features, questions = batch()
    questions[1, 3:] = 0  # question 1 has 3 words
    logits, attention = net(features, questions)
    padded = torch.cat([questions, torch.zeros(B, 6, dtype=torch.long)], 1)  # (B, T + 6)
    logits2, attention2 = net(features, padded)
    assert torch.allclose(logits, logits2, atol=1e-6)
    assert torch.allclose(attention, attention2, atol=1e-6)
    # Alone, without its batch's padding, question 1 gets the same logits.
    alone, _ = net(features[1:2], questions[1:2, :3])
    assert torch.allclose(alone, logits[1:2], atol=1e-5)


def test_collate_pads_densifies_and_indexes_images():
    items = [
        (torch.zeros(6, D, dtype=torch.float16), [torch.tensor([5, 6, 7])], [[[2, 1.0]]]),
        (
            torch.ones(6, D, dtype=torch.float16),
            [torch.tensor([8]), torch.tensor([9, 10])],
            [[[0, 0.3], [4, 0.6]], [[1, 1.0]]],
        ),
    ]
    features, questions, image_index, targets = collate(items, K)
    assert features.shape == (2, 6, D)
    assert questions.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert image_index.tolist() == [0, 1, 1]
    assert targets.shape == (3, K)
    assert targets[0].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert targets[1, 0].item() == pytest.approx(0.3) and targets[1, 4].item() == pytest.approx(0.6)
    assert targets[2].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert collate(items, None)[3] is None
    assert pad_questions([torch.tensor([], dtype=torch.long)]).tolist() == [[0]]


def test_shared_images_give_the_same_answers_as_repeated_images():
    net = tiny()
    features, questions = batch()
    image_index = torch.tensor([1, 0, 1])
    shared, attention = net(features[:2], questions, image_index)  # 2 images, 3 questions
    repeated, attention2 = net(features[image_index], questions)  # 3 copies
    assert torch.allclose(shared, repeated, atol=1e-5)
    assert torch.allclose(attention, attention2, atol=1e-6)


def test_tiny_model_overfits_a_handful_of_examples():
    torch.manual_seed(0)
    net = tiny(glimpses=2)
    net.train()
    features = torch.randn(8, 6, D)  # (N, P, D)
    questions = torch.randint(4, V, (8, 4))  # (N, T)
    questions[::2, 2:] = 0  # some shorter questions
    answers = torch.arange(8) % K
    targets = F.one_hot(answers, K).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = net(features, questions)
        loss = vqa_loss(logits, targets, "vqa")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    logits, _ = net(features, questions)
    assert (logits.argmax(1) == answers).all()
