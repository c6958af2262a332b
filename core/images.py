"""The one image loader and eval transform shared by training, evaluation, the CLI and the app.

Every bad input (missing, empty, not a regular file, not an image, truncated, absurdly large)
becomes an ``ImageError`` with a one-line "<name>: <reason>" message; every good one becomes a fully
decoded 8-bit RGB image, with phone rotation applied and transparency put on white.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import AttendError

# Documented limit: 64 megapixels (an 8000x8000 photo). Checked from the header before
# decoding, so a small file declaring a huge canvas never allocates it. Below Pillow's
# own bomb threshold (~89 MP), so our clear message is the one users normally see.
MAX_PIXELS = 64_000_000

# Documented limit: 256 MiB per image file (or bytes / file object), checked before reading, so
# that a huge file, /dev/zero or a stream that never ends costs neither memory nor time. Far above
# any real photo (a 100-megapixel JPEG is ~50 MB) and above an uncompressed 8-bit RGB picture at
# MAX_PIXELS (192 MB), so a file this large can only fail the pixel limit anyway.
MAX_FILE_BYTES = 256 * 1024 * 1024

_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}


class ImageError(AttendError):
    """An image that cannot be used; the message is "<name>: <reason>" on one line."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(" ".join(f"{name}: {reason}".split()))  # keep it on one line


def _too_large(name: str, width: int, height: int) -> ImageError:
    return ImageError(
        name,
        f"image too large ({width}x{height} = {width * height / 1e6:.1f} megapixels; "
        f"limit is {MAX_PIXELS // 1_000_000} megapixels)",
    )


def _bomb(name: str, exc: Exception) -> ImageError:
    # Pillow refuses before we see the size; its message still carries the pixel count.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:.1f} megapixels; " if found else ""
    limit = MAX_PIXELS // 1_000_000
    return ImageError(name, f"image too large ({size}limit is {limit} megapixels)")


def _size(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _too_big(name: str, size: int | None) -> ImageError:
    limit = _size(MAX_FILE_BYTES)
    if size is None:  # a stream: only known to be longer than the limit
        return ImageError(name, f"file too large (more than the limit of {limit} per image)")
    return ImageError(name, f"file too large ({_size(size)}; limit is {limit} per image)")


_KINDS = (
    (stat.S_ISDIR, "is a directory, not an image file"),
    (stat.S_ISFIFO, "is a pipe (FIFO), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def _not_regular(name: str, mode: int) -> ImageError:
    for test, reason in _KINDS:
        if test(mode):
            return ImageError(name, reason)
    return ImageError(name, "not a regular file")


def _read_path(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES. Checked with stat() BEFORE opening (opening
    a FIFO waits for a writer; a device never ends), opened non-blocking and checked again on the open
    handle (the path may have changed in between), then read with the cap + 1 as the limit."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(name, "no such file") from None
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    except ValueError as exc:  # an embedded NUL byte
        raise ImageError(name, f"not a usable path ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(name, info.st_mode)
    if info.st_size > MAX_FILE_BYTES:
        raise _too_big(name, info.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "rb") as f:  # whole file: no handle stays open behind the image
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _not_regular(name, info.st_mode)
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:  # it grew after stat()
        raise _too_big(name, None)
    return data


def _read_source(source: Any, name: str | None) -> tuple[Any, str]:
    """Turn a path / bytes / file-like into something Image.open accepts, plus a name."""
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        data = _read_path(source, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if memoryview(source).nbytes > MAX_FILE_BYTES:
            raise _too_big(name, memoryview(source).nbytes)
        data = bytes(source)
    elif hasattr(source, "read"):
        given = getattr(source, "name", None)
        name = name or (given if isinstance(given, str) and given else "<file>")
        # Streamlit's UploadedFile: read() is empty after an earlier read on a rerun,
        # getvalue() always returns the whole upload (already in memory: only its size is checked).
        try:
            data = source.getvalue() if hasattr(source, "getvalue") else source.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(name, "file object did not return bytes (open it in binary mode)")
        if len(data) > MAX_FILE_BYTES:
            raise _too_big(name, len(data) if hasattr(source, "getvalue") else None)
    else:
        raise TypeError(f"load_image: unsupported source type {type(source).__name__}")
    if len(data) == 0:
        raise ImageError(name, "empty file (0 bytes)")
    return io.BytesIO(data), name


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float greyscale -> 8-bit RGB by the data's real range.

    ``convert("RGB")`` clips these at 255, which turns ordinary 16-bit pictures white.
    """
    arr = np.asarray(image)
    if image.mode.startswith("I;16"):
        out = arr.astype(np.float32) / 257.0  # 65535 -> 255 exactly
    elif image.mode == "I":
        arr = arr.astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 65535:
            out = arr / 257.0  # 16-bit PNG/TIFF data widened to int32 by Pillow
        else:
            out = (arr - lo) * (255.0 / (hi - lo or 1.0))
    else:  # "F": either 0..1 data or 0..255-like data
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        out = arr * 255.0 if arr.min() >= 0 and arr.max() <= 1.0 else arr
    grey = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Any Pillow mode -> a new 8-bit RGB image; transparency composited onto white."""
    if image.mode.startswith("I") or image.mode == "F":
        return _scale_to_8bit(image)
    try:
        if _has_alpha(image):
            rgba = image.convert("RGBA")  # also applies P/L/RGB colour-key transparency
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")  # 1, L, P, RGB, CMYK (Adobe-inverted handled), YCbCr
    except ValueError as exc:
        raise ImageError(name, f"unsupported image mode {image.mode} ({exc})") from None


def load_image(source: Any, name: str | None = None) -> Image.Image:
    """Load ``source`` (path, bytes, binary file object or PIL image) as a decoded RGB image.

    Applies EXIF orientation, keeps the first frame of animations and puts transparent
    areas on white. Raises ``ImageError`` ("<name>: <reason>") for anything unusable.
    """
    if isinstance(source, Image.Image):
        name, image = name or "<image>", source
    else:
        fp, name = _read_source(source, name)
        try:
            # Pillow's bomb *warning* would only print; make it an error inside this block.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(fp)
        except UnidentifiedImageError:
            raise ImageError(name, "not an image file (cannot identify format)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(name, exc) from None
        except Exception as exc:  # a damaged header: any decoder error is the file's fault
            reason = f"truncated or corrupt image header ({type(exc).__name__}: {exc})"
            raise ImageError(name, reason) from None
    width, height = image.size
    if width * height > MAX_PIXELS:  # before load(): never allocate the declared canvas
        raise _too_large(name, width, height)
    if width == 0 or height == 0:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    try:
        image.load()  # first frame only; truncated data fails here, not later in a batch
    except Exception as exc:
        raise ImageError(name, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from None
    try:
        oriented = ImageOps.exif_transpose(image)  # returns a copy; caller's image untouched
    except Exception:
        oriented = image  # unreadable EXIF should not cost the user the picture
    return _to_rgb(oriented, name)


def resize_for_model(image: Image.Image, size: int) -> Image.Image:
    """Resize the whole image to ``size`` x ``size`` (no crop: the attention grid must
    cover the whole picture, so the aspect ratio is not kept)."""
    # reducing_gap: a cheap box pre-shrink then bicubic, close to full antialiasing.
    return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def to_tensor(
    image: Image.Image,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """(3, size, size) float32 tensor: (resize_for_model(image) / 255 - mean) / std."""
    if image.mode != "RGB":
        image = _to_rgb(image, "<image>")
    pixels = torch.from_numpy(np.array(resize_for_model(image, size), dtype=np.uint8))
    tensor = pixels.permute(2, 0, 1).to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t).contiguous()


def load_tensor(
    source: Any,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    name: str | None = None,
) -> torch.Tensor:
    """``load_image`` then ``to_tensor``: the eval input for one image."""
    return to_tensor(load_image(source, name), size, mean, std)
