"""Answer questions about images: what `attend ask` and the app call.

``Answerer.load()`` (the shipped scenes model) or ``Answerer.load("easy-vqa")`` or a path;
``answerer.ask(images, questions)`` answers one question per image, batched, and returns
plain dicts::

    {"question": str, "answer": str, "top_k": [[answer, probability], ...],
     "attention": G x h x w nested lists (rows first), "grid": [h, w],
     "question_tokens": [...], "unknown_words": [...],
     "in_domain": bool | None, "domain_score": float | None, "labels": [[name, p], ...] | None}

or, for an unusable question or image, ``{"question": str, "error": str, ...}``.
``ask_one`` raises the error (an ``AttendError``) instead.

Honest answers. ``in_domain``/``domain_score``: is the image like the training images
(core/domain.py; None when the checkpoint has no statistics). ``labels``: the encoder's own
ImageNet top 5 (core/recognise.py). A question with a content word the model does not know
(anything but a short list of function words) gets ``"answer": None, "top_k": [],
"withheld": "the model does not know 'person', ..."`` unless ``allow_unknown``; a spelling the
model does not know is first replaced by its variant the model knows (colour/color, grey/gray).

Multiple choice: given candidate answers (``choices=[...]``, at least 2), a result also has
``"multiple_choice": {"choice": str | None, "ranked": [{"choice", "form", "probability",
"rank"}, ...], "unscorable": [...]}`` (``vqa/choices.py``: the candidates ranked by the model's
probabilities after the official answer normalisation; those outside its answer list are
listed, never ranked). Without choices the result is exactly the open-ended one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import check_encoder_fit
from core.domain import DomainStats, domain_for
from core.encoder import ImageEncoder
from core.errors import AttendError
from core.recognise import look, reusable
from core.vocab import tokenize

from .checkpoint import load_vqa, resolve_checkpoint
from .choices import answer_forms, check_choices, rank_choices
from .data import MAX_QUESTION_TOKENS, pad_questions, question_ids

ENCODE_BATCH = 32

# Spellings of one word: a question may use either, whichever one the model was trained on.
VARIANTS = {
    "colour": "color",
    "color": "colour",
    "colours": "colors",
    "colors": "colours",
    "coloured": "colored",
    "colored": "coloured",
    "grey": "gray",
    "gray": "grey",
}
# Words a question can do without: an unknown one of these is dropped; any other unknown word
# withholds the answer (the model would answer a different question).
FUNCTION_WORDS = frozenset(
    "a an the this that these those is are was were be been do does did can could would should will "
    "of in on at to for from with by about into onto over under as and or there here it its please "
    "me tell you see i".split()
)


def spelled_for(tokens: list[str], known) -> list[str]:
    """Each token the model does not know replaced by its other spelling where the model knows that."""
    return [VARIANTS[t] if t not in known and VARIANTS.get(t) in known else t for t in tokens]


def withheld_reason(unknown: Sequence[str]) -> str | None:
    """Why an answer is withheld: the content words the model does not know; None when all are known."""
    content = list(dict.fromkeys(t for t in unknown if t not in FUNCTION_WORDS))
    if not content:
        return None
    words = ", ".join(f"'{t}'" for t in content)
    return f"the model does not know {words}, so it would answer another question"


class QuestionError(AttendError):
    """A question the model cannot answer: empty, too long, or made only of unknown words."""


class Answerer:
    """A trained VQA model with its image encoder, vocabulary and answer list."""

    def __init__(
        self,
        net,
        vocab,
        answers: list[str],
        encoder: ImageEncoder,
        checkpoint: dict,
        device: torch.device,
        domain: DomainStats | None = None,
        allow_unknown: bool = False,
    ):
        self.net, self.vocab, self.answers, self.encoder = net, vocab, answers, encoder
        self.checkpoint, self.device, self.domain = checkpoint, device, domain
        self.allow_unknown = allow_unknown  # answer even when a content word is unknown (withheld otherwise)
        self.grid = list(net.config.grid)
        self.forms = answer_forms(answers)  # normalised form -> answer indices, for multiple choice

    @classmethod
    def load(
        cls, checkpoint: str | Path | None = None, device: str | torch.device = "cpu", allow_unknown: bool = False
    ) -> Answerer:
        """``checkpoint``: a path, ``"scenes"`` or ``"easy-vqa"`` (the shipped models); None = scenes.
        ``allow_unknown``: answer a question with a content word the model does not know (by
        default the answer is withheld and the result says which word)."""
        device = torch.device(device)
        net, vocab, answers, encoder_config, state = load_vqa(checkpoint, device)
        path = resolve_checkpoint(checkpoint)
        check_encoder_fit(path, "VQA", net.config.grid, net.config.encoder_dim, encoder_config)
        domain = domain_for(path, state)
        encoder = ImageEncoder(encoder_config).to(device)
        return cls(net, vocab, answers, encoder, state, device, domain, allow_unknown)

    # ---------------------------------------------------------------- the two halves
    def check_question(self, question: str) -> tuple[list[str], list[str]]:
        """(tokens, unknown words) of a question; ``QuestionError`` when it cannot be answered."""
        tokens = spelled_for(tokenize(question or ""), self.vocab.stoi)
        unknown = self.vocab.unknown(tokens)
        if not tokens:
            raise QuestionError('empty question: ask something about the image, e.g. "what colour is the circle?"')
        if len(tokens) > MAX_QUESTION_TOKENS:
            raise QuestionError(f"question too long ({len(tokens)} words; the limit is {MAX_QUESTION_TOKENS})")
        if len(unknown) == len(tokens):
            raise QuestionError(
                f"none of the question's words is known to this model "
                f"(unknown words: {', '.join(dict.fromkeys(unknown))})"
            )
        return tokens, unknown

    @torch.inference_mode()
    def encode(self, images: Sequence[Any], info: bool = False):
        """Images (paths, bytes, file objects or PIL images) -> grids (N, P, D); ``ImageError`` if one is bad.
        ``info``: (grids, their ``image_info``)."""
        x = torch.stack([self.encoder.preprocess(image) for image in images]).to(self.device)  # (N, C, S, S)
        features = self.encoder(x)[0]  # (N, P, D)
        return (features, self.image_info(features, x)) if info else features

    @torch.inference_mode()
    def answer_features(
        self,
        features: torch.Tensor,
        token_lists: Sequence[list[str]],
        top_k: int = 3,
        image_index: torch.Tensor | None = None,
        choices: Sequence[Sequence[str] | None] | None = None,
        allow_unknown: bool | None = None,
        images: list[dict] | None = None,
    ) -> list[dict]:
        """Already encoded grids (N, P, D) and tokenized questions -> one result each.

        ``image_index`` (B,): the grid each question is about (default: question b, grid b).
        ``choices``: per question, checked candidate answers (``check_choices``) or None.
        ``allow_unknown``: answer despite unknown content words (None: the model's setting).
        ``images``: per grid, its ``image_info`` (default: the domain check only, no labels).
        A withheld answer is ``"answer": None, "top_k": [], "withheld": reason``.
        """
        allow_unknown = self.allow_unknown if allow_unknown is None else allow_unknown
        ids = [torch.tensor(question_ids(tokens, self.vocab), dtype=torch.long) for tokens in token_lists]
        questions = pad_questions(ids).to(self.device)  # (B, T)
        if image_index is not None:
            image_index = image_index.to(self.device)
        logits, attention = self.net(features.to(self.device).float(), questions, image_index)  # (B, K), (B, G, P)
        probs = torch.softmax(logits.float(), dim=1)  # (B, K)
        top = probs.topk(min(top_k, probs.shape[1]), dim=1)
        h, w = self.grid
        maps = attention.reshape(attention.shape[0], attention.shape[1], h, w).cpu()  # (B, G, h, w)
        images = images or self.image_info(features)
        rows = range(len(token_lists)) if image_index is None else image_index.tolist()
        results = []
        for b, tokens in enumerate(token_lists):
            pairs = [[self.answers[k], round(p, 4)] for p, k in zip(top.values[b].tolist(), top.indices[b].tolist())]
            results.append(
                {
                    "answer": pairs[0][0],
                    "top_k": pairs,
                    "attention": [[[round(v, 4) for v in row] for row in glimpse] for glimpse in maps[b].tolist()],
                    "grid": [h, w],
                    "question_tokens": list(tokens),
                    "unknown_words": self.vocab.unknown(tokens),
                    **images[rows[b]],
                }
            )
            if choices is not None and choices[b] is not None:
                results[-1]["multiple_choice"] = rank_choices(probs[b], self.forms, choices[b])
            reason = None if allow_unknown else withheld_reason(results[-1]["unknown_words"])
            if reason is not None:  # the model would answer another question: say so, answer nothing
                results[-1].update(answer=None, top_k=[], withheld=reason)
                results[-1].pop("multiple_choice", None)
        return results

    def image_info(self, features: torch.Tensor, inputs: torch.Tensor | None = None) -> list[dict]:
        """Grids (N, P, D) encoded from ``inputs`` (N, C, S, S) -> per image ``in_domain``,
        ``domain_score`` (None without statistics) and, given the inputs, the encoder's ImageNet
        ``labels`` (core/domain.py, core/recognise.py)."""
        n = features.shape[0]
        if inputs is None and not reusable(self.encoder.config):
            return [{"in_domain": None, "domain_score": None, "labels": None}] * n
        probe, seen = look(features, self.encoder.config, inputs)  # (N, 1280), labels and maps
        checks = self.domain.check(probe) if self.domain else [{}] * n
        return [
            {
                "in_domain": c.get("in_domain"),
                "domain_score": c.get("domain_score"),
                "labels": s.get("labels"),
            }
            for c, s in zip(checks, seen)
        ]

    # ---------------------------------------------------------------- the API
    def ask(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        top_k: int = 3,
        choices: Sequence[Sequence[str] | None] | None = None,
    ) -> list[dict]:
        """One question per image (the same image may recur; it is encoded once per call).

        ``choices``: per question, candidate answers to rank (multiple choice) or None.
        A bad question, image or list of choices gives ``{"question", "error", ...}`` in its
        place; the others are answered.
        """
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        if choices is not None and len(choices) != len(questions):
            raise ValueError(f"{len(choices)} lists of choices for {len(questions)} questions")
        checked: list[list[str] | None] = [None] * len(questions)
        results: list[dict | None] = [None] * len(questions)
        tokens: dict[int, list[str]] = {}
        for i, question in enumerate(questions):
            try:
                tokens[i], _ = self.check_question(question)
                if choices is not None and choices[i] is not None:
                    checked[i] = check_choices(choices[i])
            except AttendError as e:
                tokens.pop(i, None)
                tok = tokenize(question or "")
                results[i] = {
                    "question": question,
                    "error": str(e),
                    "question_tokens": tok,
                    "unknown_words": self.vocab.unknown(tok),
                }
        # Encode each distinct image once, in batches; a bad image fails only its questions.
        grids: dict[Any, torch.Tensor | str] = {}
        info: dict[Any, dict] = {}
        pending: list[tuple[Any, torch.Tensor]] = []
        for i in tokens:
            key = _image_key(images[i])
            if key in grids:
                continue
            grids[key] = "pending"
            try:
                pending.append((key, self.encoder.preprocess(images[i])))  # (C, S, S)
            except AttendError as e:
                grids[key] = str(e)
        for start in range(0, len(pending), ENCODE_BATCH):
            chunk = pending[start : start + ENCODE_BATCH]
            with torch.inference_mode():
                x = torch.stack([t for _, t in chunk]).to(self.device)  # (N, C, S, S)
                encoded = self.encoder(x)[0]  # (N, P, D)
            grids.update((key, grid) for (key, _), grid in zip(chunk, encoded))
            info.update((key, row) for (key, _), row in zip(chunk, self.image_info(encoded, x)))
        for i in list(tokens):
            grid = grids[_image_key(images[i])]
            if isinstance(grid, str):
                results[i] = {
                    "question": questions[i],
                    "error": grid,
                    "question_tokens": tokens.pop(i),
                    "unknown_words": [],
                }
        order = sorted(tokens)
        if order:
            keys = list(dict.fromkeys(_image_key(images[i]) for i in order))
            row = {key: n for n, key in enumerate(keys)}
            features = torch.stack([grids[key] for key in keys])  # (N, P, D)
            image_index = torch.tensor([row[_image_key(images[i])] for i in order])  # (B,)
            answered = self.answer_features(
                features,
                [tokens[i] for i in order],
                top_k,
                image_index,
                [checked[i] for i in order],
                images=[info[key] for key in keys],
            )
            for i, result in zip(order, answered):
                results[i] = {"question": questions[i], **result}
        return results  # type: ignore[return-value]

    def ask_one(
        self,
        image: Any,
        question: str,
        top_k: int = 3,
        choices: Sequence[str] | None = None,
        allow_unknown: bool | None = None,
    ) -> dict:
        """One question about one image, optionally with candidate answers to rank; raises
        ``AttendError`` (one line) if the question, the image or the choices are unusable.
        ``allow_unknown``: as in ``answer_features``."""
        tokens, _ = self.check_question(question)
        checked = None if choices is None else check_choices(choices)
        features, info = self.encode([image], info=True)  # (1, P, D)
        answered = self.answer_features(
            features, [tokens], top_k, choices=[checked], allow_unknown=allow_unknown, images=info
        )
        return {"question": question, **answered[0]}


def _image_key(image: Any) -> Any:
    if isinstance(image, (str, Path)):
        return ("path", str(image))
    if isinstance(image, (bytes, bytearray)):
        return ("bytes", bytes(image))
    return ("object", id(image))


# ---------------------------------------------------------------- a JSONL file of questions

BATCH_LINES = 64  # questions answered together by ``ask_file``


def read_questions(path: str | Path) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """(line number, image, question, None) or (line number, None, None, error) for each non-blank line of
    a JSONL file of ``{"image": PATH, "question": TEXT}``; a relative image path that does not exist from
    the working directory is read relative to the file. An unreadable file raises ``AttendError``.
    (``read_question_items`` also gives each line's ``"choices"``.)"""
    for n, image, question, _, error in read_question_items(path):
        yield n, image, question, error


def read_question_items(
    path: str | Path,
) -> Iterator[tuple[int, str | None, str | None, list[str] | None, str | None]]:
    """``read_questions`` with each line's optional ``"choices"`` (a list of candidate answers, for
    multiple choice) as a fourth field: (n, image, question, choices or None, None), or (n, None,
    None, None, error) for a bad line. The choices' content is checked when they are ranked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AttendError(f"{path}: questions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AttendError(f"{path}: cannot read questions file ({type(e).__name__})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            yield n, None, None, None, f"line {n}: not valid JSON"
            continue
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("image"), str)
            or not isinstance(item.get("question"), str)
        ):
            yield n, None, None, None, f'line {n}: expected {{"image": PATH, "question": TEXT}}'
            continue
        choices = item.get("choices")
        if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
            yield n, None, None, None, f'line {n}: "choices" must be a list of candidate answers (strings)'
            continue
        image = Path(item["image"])
        if not image.is_absolute() and not image.exists() and (path.parent / image).exists():
            image = path.parent / image  # relative to the questions file when not to the cwd
        yield n, str(image), item["question"], choices, None


def ask_file(answerer: Answerer, path: str | Path, top_k: int = 3, batch_lines: int = BATCH_LINES) -> Iterator[dict]:
    """Answer a JSONL file of questions (``read_question_items``) ``batch_lines`` at a time, so a long
    file streams: one dict per non-blank line, in file order -- ``{"line": n, "image": ..., **answer}``
    (an ``ask`` result, which may itself hold an ``error``, and a ``multiple_choice`` where the line has
    ``"choices"``), or ``{"line": n, "error": ...}`` for a bad line."""
    if batch_lines < 1:
        raise ValueError(f"batch_lines must be at least 1, got {batch_lines}")

    def answered(batch: list) -> Iterator[dict]:
        good = [(image, question, choices) for _, image, question, choices, error in batch if error is None]
        answers = iter(
            answerer.ask(
                [image for image, _, _ in good],
                [question for _, question, _ in good],
                top_k=top_k,
                choices=[choices for _, _, choices in good],
            )
        )
        for n, image, _, _, error in batch:
            yield {"line": n, "error": error} if error else {"line": n, "image": image, **next(answers)}

    batch: list = []
    for item in read_question_items(path):
        batch.append(item)
        if len(batch) == batch_lines:
            yield from answered(batch)
            batch = []
    if batch:
        yield from answered(batch)
