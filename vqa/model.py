"""Show, Ask, Attend and Answer (Kazemi & Elqursh 2017): a CNN + LSTM model with
question-guided attention glimpses over the image grid.

Legend: B batch (questions), N images (a batch's questions share them), P regions (h * w),
D encoder channels, C position channels, T question tokens, E word embedding, H question
(LSTM) hidden, A attention, G glimpses, F classifier hidden, K answers.

    grid (N, P, D) --L2 norm per region--> [ . ; position (P, C)] --> image (N, P, D + C)
    question ids (B, T) --embedding, tanh--> LSTM --> q (B, H)
    scores:    ReLU(W_v image + W_q q) --> G logits per region --> (B, G, P)
    attention: softmax over P --> (B, G, P)
    glimpses:  sum_p attention_gp image_p --> (B, G, D + C)
    answer:    MLP([glimpses; q; evidence(scores)]) --> logits (B, K)

Kazemi's attention is a 1x1 convolution on the concatenation [image; tiled question];
``W_v image + W_q q`` is the same linear map split in two, which spares building the tiled
(B, P, D + C + H) tensor, and lets a batch compute the image side once per image. The
LSTM runs on packed sequences, so padding never reaches it: a question's answer does not
depend on how much padding its batch needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from core.position import coordinate_features

PAD_ID = 0
POSITION_BANDS = 4  # coordinate_features gives 4 * bands = 16 channels per cell


@dataclass
class VQAConfig:
    question_vocab_size: int
    num_answers: int
    encoder_dim: int = 1280
    grid: list[int] = field(default_factory=lambda: [7, 7])  # (h, w) the model was trained on
    position_dim: int = 32  # C: learned map of each cell's (x, y), concatenated; 0 = none
    # Sizes are Kazemi's halved or quartered (E 300, H 1024, A 512, F 1024 there) so that an
    # epoch of the shipped sets takes about a minute on 2 CPU cores; the LSTM dominated the
    # step time at H 512 (measured with the profiler). For VQA v2, raise them with --set.
    embed_dim: int = 128  # E
    hidden_dim: int = 256  # H: the question vector
    attention_dim: int = 256  # A
    glimpses: int = 2  # G (Kazemi: 2)
    classifier_dim: int = 512  # F
    classifier_layers: int = 1  # hidden layers of the answer MLP (Kazemi: 1)
    evidence: bool = True  # also give the classifier each glimpse's match strength (2 G numbers)
    dropout: float = 0.3  # Kazemi: 0.5 on VQA v2; the synthetic sets need less


class VQANet(nn.Module):
    """``forward(features (N, P, D), questions (B, T), image_index (B,))`` -> logits (B, K),
    attention (B, G, P)."""

    def __init__(self, config: VQAConfig):
        super().__init__()
        self.config = c = config
        image_dim = c.encoder_dim + c.position_dim
        if c.position_dim:
            # Spatial questions ("is the red circle left of the blue square?") need to know
            # where a glimpse landed; pooled CNN features alone say little about that.
            self.position = nn.Linear(4 * POSITION_BANDS, c.position_dim)
        self.embedding = nn.Embedding(c.question_vocab_size, c.embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(c.embed_dim, c.hidden_dim, batch_first=True)
        self.image_proj = nn.Linear(image_dim, c.attention_dim)
        self.question_proj = nn.Linear(c.hidden_dim, c.attention_dim, bias=False)
        self.glimpse_logits = nn.Linear(c.attention_dim, c.glimpses)
        joint_dim = c.glimpses * image_dim + c.hidden_dim + (2 * c.glimpses if c.evidence else 0)
        layers: list[nn.Module] = []
        for n in range(c.classifier_layers):
            layers += [
                nn.Dropout(c.dropout),
                nn.Linear(joint_dim if n == 0 else c.classifier_dim, c.classifier_dim),
                nn.ReLU(),
            ]
        layers += [
            nn.Dropout(c.dropout),
            nn.Linear(c.classifier_dim if c.classifier_layers else joint_dim, c.num_answers),
        ]
        self.classifier = nn.Sequential(*layers)
        self.dropout = nn.Dropout(c.dropout)

    def image(self, features: torch.Tensor) -> torch.Tensor:
        """The grid (B, P, D) -> L2-normalised regions with their position (B, P, D + C)."""
        # Kazemi: normalising each location's vector is what made the simple model work.
        features = F.normalize(features.float(), dim=-1)  # (B, P, D)
        if self.config.position_dim:
            h, w = self.config.grid
            if features.shape[1] != h * w:
                raise ValueError(f"grid has {features.shape[1]} cells, the model was built for {h}x{w}")
            coords = coordinate_features(h, w, POSITION_BANDS, device=features.device)  # (P, 16)
            position = self.position(coords).expand(features.shape[0], -1, -1)  # (B, P, C)
            features = torch.cat([features, position], dim=-1)  # (B, P, D + C)
        return features

    def question(self, questions: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), 0 = padding -> the LSTM's last hidden state (B, H).

        The LSTM reads each distinct question of the batch once: VQA questions repeat a lot
        ("how many objects are there?"), and the LSTM is the costliest part of a CPU step.
        """
        distinct, inverse = torch.unique(questions, dim=0, return_inverse=True)  # (U, T), (B,)
        lengths = (distinct != PAD_ID).sum(1).clamp(min=1)  # (U,)
        embedded = torch.tanh(self.embedding(distinct))  # (U, T, E)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n (1, U, H), input order
        return h_n[-1][inverse]  # (B, H)

    def attend(self, projected: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Projected regions (B, P, A) and question (B, H) -> attention logits (B, G, P)."""
        joint = F.relu(projected + self.question_proj(q).unsqueeze(1))  # (B, P, A)
        return self.glimpse_logits(joint).transpose(1, 2)  # (B, G, P)

    def forward(
        self, features: torch.Tensor, questions: torch.Tensor, image_index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, P, D), questions (B, T); ``image_index`` (B,) names each question's
        image (default: question b is about image b, N = B). The image side is computed
        once per image however many questions it has."""
        image = self.image(features)  # (N, P, D + C)
        projected = self.image_proj(self.dropout(image))  # (N, P, A)
        if image_index is not None:
            image, projected = image[image_index], projected[image_index]  # (B, P, D + C), (B, P, A)
        q = self.question(questions)  # (B, H)
        scores = self.attend(projected, q)  # (B, G, P)
        attention = torch.softmax(scores, dim=-1)  # (B, G, P), sums to 1 per glimpse
        glimpses = torch.bmm(attention, image)  # (B, G, D + C)
        parts = [glimpses.flatten(1), q]  # (B, G * (D + C)), (B, H)
        if self.config.evidence:
            parts.append(evidence(scores))  # (B, 2G)
        joint = torch.cat(parts, dim=1)  # (B, G * (D + C) + H [+ 2G])
        return self.classifier(joint), attention  # (B, K), (B, G, P)


def evidence(scores: torch.Tensor) -> torch.Tensor:
    """How strongly, and how much, the image matched each glimpse: (B, G, P) logits -> (B, 2G).

    The softmax keeps only where the scores peak, not how high they are; but the height
    is the answer to "is there a red shape?" (measured: without it the model learned
    colour existence questions only as "no", the majority answer, at 95% validation
    accuracy on easy-VQA). Per glimpse: logsumexp over regions minus log P (a soft
    maximum, 0 for flat scores) and the mean sigmoid (the matching share of the grid).
    """
    P = scores.shape[-1]
    peak = torch.logsumexp(scores, dim=-1) - math.log(P)  # (B, G)
    share = torch.sigmoid(scores).mean(-1)  # (B, G)
    return torch.cat([peak, share], dim=1)  # (B, 2G)


def soft_score_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Kazemi & Elqursh's loss: -sum_k t_k log softmax(logits)_k with t normalised to sum 1
    per question, averaged over the batch.

    targets (B, K): each candidate's soft score (its VQA accuracy against the human
    answers). Rows that sum to 0 (no kept answer scores) are never passed in: the data
    set drops them. With one-hot targets this is exactly the cross-entropy.
    """
    weights = targets / targets.sum(1, keepdim=True)  # (B, K)
    return -(weights * torch.log_softmax(logits.float(), dim=1)).sum(1).mean()


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor, metric: str) -> torch.Tensor:
    """The soft-score loss for the 10-answer VQA metric; plain cross-entropy where each
    question has one answer (``metric == "exact"``, easy-VQA)."""
    if metric == "exact":
        return F.cross_entropy(logits.float(), targets.argmax(1))
    return soft_score_loss(logits, targets)
