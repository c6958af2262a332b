"""Caption your own images: checkpoint + encoder + decoder behind one call (the CLI and the app use it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.checkpoint import check_encoder_fit
from core.domain import DomainStats, caption_flags, domain_for
from core.encoder import ImageEncoder
from core.images import ImageError, load_image, resize_for_model, to_tensor
from core.recognise import look
from core.vocab import Vocab

from .checkpoint import KIND, load_captioner, resolve_checkpoint
from .decode import Decoder, decode


@dataclass
class CaptionResult:
    name: str
    caption: str
    tokens: list[str]
    attention: np.ndarray | None  # (L, h, w): where the model looked for each word
    grid: tuple[int, int]
    image: Image.Image  # the whole image as the model saw it (resized, no crop)
    # Is the image like the training images (core/domain.py)? None: the checkpoint has no statistics.
    in_domain: bool | None = None
    domain_score: float | None = None  # distance / threshold: at most 1 is in domain
    flags: list[str] = field(default_factory=list)  # "length_limit", "repeated_word" (core/domain.py)
    labels: list | None = None  # the encoder's ImageNet top 5: [[name, probability], ...] (core/recognise.py)
    cams: np.ndarray | None = None  # (5, 7, 7): each label's class activation map, maximum 1

    def to_json(self) -> dict:
        return {
            "image": self.name,
            "caption": self.caption,
            "tokens": self.tokens,
            "in_domain": self.in_domain,
            "domain_score": self.domain_score,
            "flags": self.flags,
            "labels": self.labels,
            "attention": None if self.attention is None else np.round(self.attention.astype(np.float64), 5).tolist(),
            "grid": list(self.grid),
        }


class Captioner:
    """A trained decoder with the encoder it was trained on.

    ``Captioner.load()`` (the shipped scenes model), ``Captioner.load("scenes")`` or a path;
    ``captioner.caption(images)`` captions images given as paths, bytes, file objects or PIL images.
    """

    def __init__(
        self,
        decoder: Decoder,
        vocab: Vocab,
        encoder: ImageEncoder,
        checkpoint: dict,
        device: torch.device,
        path: Path,
        domain: DomainStats | None = None,
    ):
        self.decoder, self.vocab, self.encoder = decoder, vocab, encoder
        self.checkpoint, self.device, self.path, self.domain = checkpoint, device, path, domain

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        int8: bool = False,
        fast: bool = True,
    ) -> Captioner:
        """``checkpoint``: a path or a shipped model's name (None: ``scenes``); ``device``: default
        CUDA when there is one; ``int8``: int8 per-step weights (CPU); ``fast=False``: the plain model."""
        device = torch.device(device or ("cpu" if int8 or not torch.cuda.is_available() else "cuda"))
        path = resolve_checkpoint(checkpoint)
        decoder, vocab, encoder_config, state = load_captioner(path, device, int8=int8, fast=fast)
        check_encoder_fit(path, KIND, decoder.config.grid, decoder.config.encoder_dim, encoder_config)
        domain = domain_for(path, state)
        return cls(decoder, vocab, ImageEncoder(encoder_config).to(device), state, device, path, domain)

    @torch.inference_mode()
    def caption(
        self,
        sources: list | str | Path,
        beam_size: int = 3,
        batch_size: int = 16,
        names: list[str] | None = None,
        length_penalty: float = 0.0,
        errors: str = "raise",
    ) -> list[CaptionResult] | list[CaptionResult | ImageError]:
        """Caption images given as paths, bytes, file objects or PIL images, in batches.

        ``errors="raise"`` (the default): a bad image raises ``ImageError`` (one line naming it)
        before any work is done. ``errors="return"``: every image is read first as well, but a bad
        one gives its ``ImageError`` in its place in the returned list and the good ones are still
        captioned (what `attend caption` uses for a mixed batch).
        """
        if errors not in ("raise", "return"):
            raise ValueError(f'errors must be "raise" or "return", got {errors!r}')
        sources = as_sources(sources)
        names = names or [
            str(getattr(s, "name", s if isinstance(s, (str, Path)) else f"image {i}")) for i, s in enumerate(sources)
        ]
        size = self.encoder.config.image_size
        loaded: list[Image.Image | ImageError] = []
        for s, n in zip(sources, names):
            try:
                loaded.append(resize_for_model(load_image(s, name=n), size))
            except ImageError as e:
                if errors == "raise":
                    raise
                loaded.append(e)
        good = [i for i, im in enumerate(loaded) if not isinstance(im, ImageError)]
        results: list[CaptionResult | ImageError] = list(loaded)  # type: ignore[arg-type]
        for start in range(0, len(good), batch_size):
            chunk = good[start : start + batch_size]
            x = torch.stack([to_tensor(loaded[j], size, self.encoder.mean, self.encoder.std) for j in chunk])
            features, (h, w) = self.encoder(x.to(self.device))  # (B, P, D)
            probe, recognised = look(features, self.encoder.config, x)  # (B, 1280), labels and maps
            checks = self.domain.check(probe) if self.domain else [{}] * len(chunk)
            decoded = decode(self.decoder, features, beam_size=beam_size, length_penalty=length_penalty)
            for j, d, check, seen in zip(chunk, decoded, checks, recognised):
                tokens = self.vocab.decode(d.ids)
                attention = None if d.alphas is None else d.alphas.float().reshape(-1, h, w).numpy()
                results[j] = CaptionResult(
                    names[j],
                    " ".join(tokens),
                    tokens,
                    attention,
                    (h, w),
                    loaded[j],
                    check.get("in_domain"),
                    check.get("domain_score"),
                    caption_flags(tokens, self.decoder.config.max_len),
                    seen.get("labels"),
                    seen.get("cams"),
                )
        return results


def as_sources(sources) -> list:
    """One image (a path string, bytes, a file object, a PIL image) as a list of one, so a path is
    never iterated character by character; any other iterable as a list."""
    if isinstance(sources, (str, Path, bytes, bytearray, Image.Image)) or hasattr(sources, "read"):
        return [sources]
    return list(sources)


def save_attention(result: CaptionResult, path: str | Path) -> Path | None:
    """Write ``result``'s attention sheet as a PNG at ``path`` (atomically): the image, then each word's
    map over it. None, and no file, for a model without attention (the CNN+RNN baseline)."""
    import io

    from core.overlay import overlay_sheet
    from core.prepared import atomic_write_bytes

    if result.attention is None:
        return None
    buffer = io.BytesIO()
    overlay_sheet(result.image, result.tokens, result.attention).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
