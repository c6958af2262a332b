"""The shared image loader on a corpus of bad and unusual files made here with Pillow."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import AttendError
from core.images import (
    MAX_PIXELS,
    ImageError,
    load_image,
    load_tensor,
    resize_for_model,
    to_tensor,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _noise(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _px(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[xy[1], xy[0]])


def _close(got, want, tol: int = 1) -> bool:
    return all(abs(int(g) - int(w)) <= tol for g, w in zip(got, want))


def _error(source, name=None) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, name)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert isinstance(info.value, AttendError)
    return message


# --- bad files -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated_file_fails_at_load_with_its_name(tmp_path, fmt, suffix):
    good = _save(_noise(), tmp_path / f"good.{suffix}", format=fmt)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    message = _error(cut)
    assert "cut." + suffix in message and "truncated or corrupt" in message


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    bomb = _save(Image.new("1", (20000, 20000)), tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000  # a small file declaring 400 megapixels
    message = _error(bomb)
    assert "bomb.png" in message and "too large" in message and "400.0 megapixels" in message


def test_over_our_limit_but_under_pillows_gives_exact_size(tmp_path):
    big = _save(Image.new("1", (8100, 8100)), tmp_path / "big.png")  # 65.6 MP > 64 MP
    assert 8100 * 8100 > MAX_PIXELS
    message = _error(big)
    assert "big.png" in message and "too large" in message and "8100x8100" in message


def test_pillow_bomb_warning_becomes_our_error_without_leaking(tmp_path):
    # 100 MP: above Pillow's warning threshold (~89 MP), below its hard error (~179 MP).
    warn = _save(Image.new("1", (10000, 10000)), tmp_path / "warn.png")
    limit_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = _error(warn)
    assert "warn.png" in message and "too large" in message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == limit_before and warnings.filters == filters_before


def test_empty_text_missing_and_directory(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert _error(empty) == f"{empty}: empty file (0 bytes)"

    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 10)
    message = _error(text)
    assert "notes.jpg" in message and "not an image file" in message

    missing = tmp_path / "nofile.jpg"
    assert _error(missing) == f"{missing}: no such file"
    assert _error(str(missing)) == f"{missing}: no such file"

    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    message = _error(folder)
    assert "folder.jpg" in message and "directory" in message


def test_bad_bytes_and_uploads_are_named():
    assert _error(b"") == "<bytes>: empty file (0 bytes)"
    assert "<bytes>: not an image file" in _error(b"GIF89a but not really")
    upload = io.BytesIO(b"plain text")
    upload.name = "upload.png"
    assert "upload.png: not an image file" in _error(upload)
    assert _error(b"", name="given.jpg") == "given.jpg: empty file (0 bytes)"


def test_custom_name_is_used_and_unknown_types_are_a_programming_error(tmp_path):
    assert "shown.jpg: no such file" == _error(tmp_path / "x.jpg", name="shown.jpg")
    with pytest.raises(TypeError):
        load_image(12345)


# --- unusual but valid files -----------------------------------------------------------


def test_sixteen_bit_greyscale_is_scaled_not_white(tmp_path):
    values = np.array([[0, 32896, 65535, 257 * 200]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    image = load_image(path)
    assert image.mode == "RGB"
    assert [_px(image, (x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (200, 200, 200)]


def test_sixteen_bit_big_endian_and_int32_and_float_modes():
    big_endian = Image.frombytes("I;16B", (2, 1), np.array([32896, 65535], ">u2").tobytes())
    assert [_px(load_image(big_endian), (x, 0)) for x in range(2)] == [(128,) * 3, (255,) * 3]
    as_int = Image.fromarray(np.array([[32896, 0]], dtype=np.int32), "I")
    assert _px(load_image(as_int), (0, 0)) == (128,) * 3
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert [_px(load_image(unit), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[-5.0, 100.0, 300.0, np.nan]], dtype=np.float32), "F")
    assert [_px(load_image(wide), (x, 0))[0] for x in range(4)] == [0, 100, 255, 0]


def test_cmyk_jpeg_pure_cyan(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), tmp_path / "cyan.jpg", quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and _close(_px(image, (8, 8)), (0, 255, 255), tol=6)


def test_rgba_composited_on_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    im.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])
    image = load_image(_save(im, tmp_path / "alpha.png"))
    assert _px(image, (0, 0)) == (255, 255, 255)  # transparent black -> white, not black
    assert _px(image, (1, 0)) == (255, 0, 0)
    # 128/255 red over white: 255 * (1 - 128/255) = 127 for green and blue.
    assert _close(_px(image, (2, 0)), (255, 127, 127))


def test_palette_with_transparency_and_grey_colour_key(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    pal.putdata([0, 1])
    image = load_image(_save(pal, tmp_path / "pal.png", transparency=0))
    assert _px(image, (0, 0)) == (255, 255, 255) and _px(image, (1, 0)) == (0, 200, 0)

    grey = Image.new("L", (2, 1))
    grey.putdata([0, 90])
    image = load_image(_save(grey, tmp_path / "key.png", transparency=0))
    assert _px(image, (0, 0)) == (255, 255, 255) and _px(image, (1, 0)) == (90, 90, 90)


def test_la_one_bit_and_l(tmp_path):
    la = Image.new("LA", (3, 1))
    la.putdata([(0, 0), (0, 255), (100, 255)])
    image = load_image(_save(la, tmp_path / "la.png"))
    assert [_px(image, (x, 0)) for x in range(3)] == [(255,) * 3, (0,) * 3, (100,) * 3]

    bits = Image.new("1", (2, 1))
    bits.putdata([0, 255])
    image = load_image(_save(bits, tmp_path / "bits.png"))
    assert [_px(image, (x, 0)) for x in range(2)] == [(0,) * 3, (255,) * 3]
    assert _px(load_image(Image.new("L", (1, 1), 77)), (0, 0)) == (77,) * 3


@pytest.mark.parametrize("suffix", ["gif", "png", "webp"])
def test_animation_gives_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / f"anim.{suffix}"
    extra = {"lossless": True} if suffix == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, **extra)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    image = load_image(path)
    assert image.mode == "RGB" and _close(_px(image, (4, 4)), (255, 0, 0), tol=3)


def test_exif_orientation_six_rotates_clockwise(tmp_path):
    # Stored 40 wide x 20 high, blue with a red 10x10 block at the stored top-left.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(stored, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (20, 40)
    # 90 degrees clockwise moves (x, y) to (H - 1 - y, x): the block lands top-right.
    assert _close(_px(image, (15, 5)), (255, 0, 0), tol=12)
    assert _close(_px(image, (5, 5)), (0, 0, 255), tol=12)
    assert _close(_px(image, (15, 35)), (0, 0, 255), tol=12)


def test_path_bytes_file_object_upload_and_pil_agree(tmp_path):
    path = _save(_noise(), tmp_path / "same.png")
    data = path.read_bytes()
    from_path = np.asarray(load_image(path))
    from_str = np.asarray(load_image(str(path)))
    from_bytes = np.asarray(load_image(data))
    with open(path, "rb") as handle:
        from_handle = np.asarray(load_image(handle))
    from_pil = np.asarray(load_image(Image.open(path)))

    class Upload:  # like Streamlit's UploadedFile after an earlier read() on a rerun
        name = "same.png"

        def read(self) -> bytes:
            return b""

        def getvalue(self) -> bytes:
            return data

    from_upload = np.asarray(load_image(Upload()))
    for other in (from_str, from_bytes, from_handle, from_pil, from_upload):
        assert np.array_equal(from_path, other)
    assert np.array_equal(from_path, np.asarray(_noise()))


def test_result_is_loaded_independent_and_input_untouched(tmp_path):
    path = _save(_noise(), tmp_path / "gone.png")
    image = load_image(path)
    path.unlink()
    assert image.getpixel((0, 0)) == _noise().getpixel((0, 0))
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    load_image(rgba)
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0)) == (10, 20, 30, 0)


# --- resize and tensor ------------------------------------------------------------------


def test_resize_covers_the_whole_non_square_image():
    wide = Image.new("RGB", (60, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (30, 0, 60, 20))
    out = resize_for_model(wide, 16)
    assert out.size == (16, 16)
    # No crop: both halves survive, left red and right blue, in every row.
    assert _close(_px(out, (0, 0)), (255, 0, 0), tol=2)
    assert _close(_px(out, (15, 15)), (0, 0, 255), tol=2)
    assert resize_for_model(Image.new("RGB", (10, 50)), 7).size == (7, 7)


def test_to_tensor_shape_dtype_and_hand_computed_values():
    uniform = Image.new("RGB", (30, 10), (100, 150, 200))
    tensor = to_tensor(uniform, 8, MEAN, STD)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    expected = [
        (100 / 255 - 0.485) / 0.229,
        (150 / 255 - 0.456) / 0.224,
        (200 / 255 - 0.406) / 0.225,
    ]
    for channel, value in enumerate(expected):
        assert torch.allclose(tensor[channel], torch.full((8, 8), value), atol=1e-5)
    grey = to_tensor(Image.new("L", (4, 4), 0), 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert grey.shape == (3, 4, 4) and float(grey.abs().max()) == 0.0


def test_load_tensor_matches_manual_pipeline(tmp_path):
    path = _save(_noise(50, 30), tmp_path / "t.jpg", quality=90)
    tensor = load_tensor(path, 32, MEAN, STD)
    resized = np.asarray(resize_for_model(load_image(path), 32), dtype=np.float64) / 255.0
    manual = (resized - np.array(MEAN)) / np.array(STD)
    assert tensor.shape == (3, 32, 32)
    assert np.allclose(tensor.numpy(), manual.transpose(2, 0, 1), atol=1e-5)
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        load_tensor(tmp_path / "missing.jpg", 32, MEAN, STD)
