"""Attention maps drawn over the image the model saw (the CLI's PNGs and the app use these)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLORMAP = "inferno"


def normalise_map(grid: np.ndarray) -> np.ndarray:
    """Scale an attention grid to 0..1 for display.

    A (near-)uniform map carries no information: it is shown as all zeros rather than
    stretching float noise into a rainbow.
    """
    grid = np.asarray(grid, dtype=np.float64)
    low, high = grid.min(), grid.max()
    if high - low <= 1e-3 * max(high, 1e-12):
        return np.zeros_like(grid)
    return (grid - low) / (high - low)


def heatmap(grid: np.ndarray, size: tuple[int, int], colormap: str = COLORMAP) -> Image.Image:
    """An (h, w) grid -> an RGB heat map of ``size`` (width, height), smoothly upsampled.

    The grid tiles the whole image, so upsampling the h x w map to the image size lines
    each cell up with the pixels it covers.
    """
    from matplotlib import colormaps

    values = Image.fromarray((normalise_map(grid) * 255).astype(np.uint8), mode="L")
    smooth = np.asarray(values.resize(size, Image.Resampling.BICUBIC), dtype=np.float64) / 255
    rgb = colormaps[colormap](smooth)[..., :3]
    return Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB")


def overlay(image: Image.Image, grid: np.ndarray, opacity: float = 0.55) -> Image.Image:
    """The heat map of ``grid`` blended over ``image``."""
    image = image.convert("RGB")
    return Image.blend(image, heatmap(grid, image.size), opacity)


def overlay_sheet(
    image: Image.Image, words: list[str], attention: np.ndarray, columns: int = 5, tile: int = 160
) -> Image.Image:
    """One tile per word: the image, that word's attention over it, the word underneath."""
    tiles = [("(image)", image.convert("RGB"))] + [(w, overlay(image, a)) for w, a in zip(words, attention)]
    rows = (len(tiles) + columns - 1) // columns
    label = 18
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (word, picture) in enumerate(tiles):
        x, y = (i % columns) * tile, (i // columns) * (tile + label)
        sheet.paste(picture.resize((tile, tile), Image.Resampling.BILINEAR), (x, y))
        draw.text((x + 4, y + tile + 3), word, fill="black")
    return sheet
