"""Attention maps drawn over an image (the CLI's PNGs and the app use these).

A "spotlight", not a colour map: where the map is high the image keeps its full brightness
and its own colours, elsewhere it is dimmed (to ``FLOOR`` of its brightness where the map is
0), and a thin line encloses the region above half the map's peak. The scenes' objects are
red, green, blue, yellow, purple and orange, the very hues of the usual heat-map colour
maps; a spotlight never changes a colour, so which object is lit is plain. Each map is
scaled to its own range (``normalise_map``): bright = the map's maximum, dim = its minimum.
The grid tiles the whole image, so the map is stretched over the image at any aspect ratio.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLORMAP = "inferno"  # kept for callers that want a heat map (``heatmap``)
FLOOR = 0.25  # the brightness kept where the map is at its minimum
CONTOUR = 0.5  # the line is drawn where the map crosses this fraction of its range
LINE = (255, 255, 255)


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

    rgb = colormaps[colormap](smooth_map(grid, size))[..., :3]
    return Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB")


def smooth_map(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) grid -> its 0..1 map at ``size`` (width, height), bicubic: (height, width) floats."""
    values = Image.fromarray((normalise_map(grid) * 255).astype(np.uint8), mode="L")
    return np.asarray(values.resize(size, Image.Resampling.BICUBIC), dtype=np.float64) / 255


def overlay(image: Image.Image, grid: np.ndarray, floor: float = FLOOR, line: bool = True) -> Image.Image:
    """``image`` lit by ``grid``: full brightness where the map peaks, ``floor`` where it is lowest,
    and (``line``) a 2-pixel contour where it crosses half its range. A uniform map, which says
    nothing, dims the whole image evenly and draws no line."""
    image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    if not normalise_map(grid).any():
        return Image.fromarray((pixels * (floor + 1) / 2).astype(np.uint8), mode="RGB")
    light = smooth_map(grid, image.size)  # (H, W)
    out = pixels * (floor + (1 - floor) * light)[..., None]
    if line:
        inside = light >= CONTOUR
        edge = np.zeros_like(inside)
        # Both pixels of every inside/outside neighbour pair (a 2-pixel line); none across the border.
        horizontal = inside[:, 1:] != inside[:, :-1]
        vertical = inside[1:, :] != inside[:-1, :]
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        edge[1:, :] |= vertical
        edge[:-1, :] |= vertical
        out[edge] = LINE
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), mode="RGB")


def overlay_sheet(
    image: Image.Image, words: list[str], attention: np.ndarray, columns: int = 5, tile: int = 160
) -> Image.Image:
    """One tile per word: the image, that word's attention over it, the word underneath; above
    them the caption and how to read the maps."""
    tiles = [("(image)", image.convert("RGB"))] + [
        (f"{i + 1}. {w}", overlay(image, a)) for i, (w, a) in enumerate(zip(words, attention))
    ]
    rows = (len(tiles) + columns - 1) // columns
    label, header = 18, 40
    sheet = Image.new("RGB", (columns * tile, header + rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), " ".join(words), fill="black")
    draw.text(
        (4, 22),
        "bright, in colour: where the model looked for the word; dim: elsewhere; "
        "white line: above half the map's range (each map scaled to its own)",
        fill=(90, 90, 90),
    )
    for i, (word, picture) in enumerate(tiles):
        x, y = (i % columns) * tile, header + (i // columns) * (tile + label)
        sheet.paste(picture.resize((tile, tile), Image.Resampling.BILINEAR), (x, y))
        draw.text((x + 4, y + tile + 3), word, fill="black")
    return sheet
