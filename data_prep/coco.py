"""COCO captions and the Karpathy splits -> DIR/captions.json + DIR/images.json.

Two readers, one output (see ``captioner/prepared.py``):

* ``prepare_coco_captions``: the official COCO caption files
  (``captions_train2014.json``, ``captions_val2014.json``), one per split, read with
  pycocotools.
* ``prepare_karpathy``: Karpathy's split files (``dataset_coco.json``,
  ``dataset_flickr8k.json``, ``dataset_flickr30k.json``), the standard captioning
  benchmark splits; ``restval`` joins ``train``.

Every caption is tokenized with ``core.vocab.tokenize`` -- the one tokenizer used
for training, decoding and the demo -- and the vocabulary comes from the train split only.
Note ``Vocab.build`` keeps words seen *at least* ``min_count`` times; the common
"words seen more than 5 times" vocabulary is ``min_count=6``.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from core.errors import AttendError
from core.prepared import CAPTIONS, add_images, read_json, write_prepared
from core.vocab import Vocab, tokenize

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _caption_entry(key: str, image_id: int, raw_captions: list[str]) -> dict:
    """One record of captions.json; captions without a single word are dropped so that
    ``captions[i]`` and ``tokens[i]`` always stay paired and no target is empty."""
    captions, tokens = [], []
    for raw in raw_captions:
        raw = raw.strip()
        toks = tokenize(raw)
        if toks:
            captions.append(raw)
            tokens.append(toks)
    return {"image": key, "image_id": int(image_id), "captions": captions, "tokens": tokens}


def _write(out_dir, source: str, splits: dict[str, list[dict]], images: dict[str, Path], min_count: int) -> dict:
    """Build the train vocabulary, write captions.json, merge images.json, summarize."""
    if "train" not in splits:
        raise AttendError(
            f"a 'train' split is needed to build the vocabulary (have: {', '.join(sorted(splits)) or 'none'})"
        )
    vocab = Vocab.build((t for rec in splits["train"] for t in rec["tokens"]), min_count)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_prepared(out_dir, CAPTIONS, {"source": source, "vocab": vocab.to_dict(), "splits": splits})
    add_images(out_dir, images)
    return {
        "source": source,
        "images": {s: len(recs) for s, recs in splits.items()},
        "captions": {s: sum(len(r["captions"]) for r in recs) for s, recs in splits.items()},
        "vocab_size": len(vocab),
    }


def _check_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise AttendError(f"{folder}: {what} not found (expected a folder of images)")


def prepare_coco_captions(
    out_dir: str | os.PathLike, splits: dict[str, tuple[Path, Path]], min_count: int = 5, source: str = "coco"
) -> dict:
    """Prepare official COCO caption files.

    ``splits`` maps a split name to ``(captions json, image folder)``, e.g.
    ``{"train": (".../captions_train2014.json", ".../train2014"), "val": (...)}``.
    Image KEY = ``"<folder name>/<file_name>"``; images without any caption are skipped
    (they cannot be trained on or scored). Records are sorted by image id.
    Returns a summary: images and captions per split, vocabulary size.
    """
    from pycocotools.coco import COCO  # imported here: only this reader needs it

    out: dict[str, list[dict]] = {}
    images: dict[str, Path] = {}
    skipped: dict[str, int] = {}
    for split, (ann_path, image_folder) in splits.items():
        ann_path, image_folder = Path(ann_path), Path(image_folder)
        data = read_json(ann_path, "COCO captions file")
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)
        ):
            raise AttendError(f"{ann_path}: not a COCO captions file (expected 'images' and 'annotations' lists)")
        if not all(isinstance(a, dict) and {"image_id", "caption"} <= a.keys() for a in data["annotations"]) or not all(
            isinstance(i, dict) and {"id", "file_name"} <= i.keys() for i in data["images"]
        ):
            raise AttendError(
                f"{ann_path}: not a COCO captions file (images need id and "
                "file_name, annotations need image_id and caption)"
            )
        _check_folder(image_folder, f"image folder for split {split!r}")
        # The JSON is parsed once (above, for clear errors) and handed to pycocotools for
        # its index; COCO(path) would parse it again and print progress lines.
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        records = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            anns = coco.imgToAnns.get(image_id, [])
            entry = _caption_entry(f"{image_folder.name}/{info['file_name']}", image_id, [a["caption"] for a in anns])
            if not entry["captions"]:
                continue
            records.append(entry)
            images[entry["image"]] = image_folder / info["file_name"]
        skipped[split] = len(coco.imgs) - len(records)
        if not records:
            raise AttendError(f"{ann_path}: split {split!r} has no captioned images")
        out[split] = records
    summary = _write(out_dir, source, out, images, min_count)
    summary["images_without_captions"] = skipped
    return summary


def prepare_karpathy(
    out_dir: str | os.PathLike,
    dataset_json: str | os.PathLike,
    image_root: str | os.PathLike,
    min_count: int = 5,
    source: str | None = None,
) -> dict:
    """Prepare a Karpathy split file (``dataset_coco.json`` / ``dataset_flickr8k.json`` /
    ``dataset_flickr30k.json``).

    Splits train (train + restval), val and test. Image KEY = ``"<filepath>/<filename>"``
    (COCO) or ``"<filename>"`` (Flickr, no filepath); the image lies at
    ``image_root/filepath/filename``. image_id = ``cocoid`` if present, else ``imgid``.
    ``source`` defaults to ``"karpathy-<name>"`` from the file name (``karpathy-coco``).
    Returns a summary: images and captions per split, vocabulary size.
    """
    dataset_json, image_root = Path(dataset_json), Path(image_root)
    data = read_json(dataset_json, "Karpathy split file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AttendError(f"{dataset_json}: not a Karpathy split file (expected an 'images' list)")
    _check_folder(image_root, "image root")
    if source is None:
        source = "karpathy-" + dataset_json.stem.removeprefix("dataset_")

    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    images: dict[str, Path] = {}
    for n, img in enumerate(data["images"]):
        if (
            not isinstance(img, dict)
            or not {"filename", "split", "sentences"} <= img.keys()
            or not ("cocoid" in img or "imgid" in img)
        ):
            raise AttendError(f"{dataset_json}: image #{n} lacks filename, split, sentences or cocoid/imgid")
        split = KARPATHY_SPLITS.get(img["split"])
        if split is None:
            raise AttendError(
                f"{dataset_json}: image #{n} has unknown split {img['split']!r} "
                f"(expected one of {', '.join(KARPATHY_SPLITS)})"
            )
        filepath = img.get("filepath") or ""
        key = f"{filepath}/{img['filename']}" if filepath else img["filename"]
        image_id = img["cocoid"] if "cocoid" in img else img["imgid"]
        # The file's own `tokens` are ignored on purpose: `raw` is re-tokenized with our
        # tokenize() so training, decoding and the demo all share ONE tokenizer (the two
        # agree on nearly every caption: lowercase words, punctuation dropped).
        sentences = img["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and "raw" in s for s in sentences):
            raise AttendError(f"{dataset_json}: image #{n} has sentences without 'raw'")
        entry = _caption_entry(key, image_id, [s["raw"] for s in sentences])
        if entry["captions"]:
            out[split].append(entry)
            images[key] = image_root / filepath / img["filename"]
    for split, records in out.items():
        if not records:
            raise AttendError(f"{dataset_json}: split {split!r} is empty")
        records.sort(key=lambda r: (r["image_id"], r["image"]))
    return _write(out_dir, source, out, images, min_count)
