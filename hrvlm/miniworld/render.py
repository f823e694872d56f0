"""A deterministic renderer of 2-D shapes with recorded nuisance factors.

Every image is a function of ``(seed, index)`` alone: its factors are sampled from a generator seeded
with the pair (:func:`item_rng`), so item ``i`` is the same whatever the order, batching or worker.
Shapes are drawn as polygons (or a thick polyline for the spiral) on a 4× supersampled mask, box-filtered
down to the output size, and composited over a numpy background.  Glyphs (letters, digits, marks) are
typeset with the DejaVu Sans Bold font shipped in ``resources/fonts`` (no system font), cropped to their ink,
scaled so their longer side spans the shape's extent, rotated and pasted on the same mask; "outline"
draws the glyph's contour only.  FreeType rasterises deterministically, so pixels depend on
``(seed, index)`` and the installed font file alone (its sha256 keys the render cache).  The palettes (shape and colour names,
background kinds, sizes) are data in ``hrvlm/resources/miniworld.json``.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hrvlm.core.resources import RESOURCES

WORLD_FILE = RESOURCES / "miniworld.json"
SUPERSAMPLE = 4  # mask resolution factor: anti-aliased edges at 32 px
GLYPH_FONT = "DejaVuSans-Bold.ttf"  # bold: strokes survive 32 px
GLYPH_PX = 96  # font size the glyphs are typeset at before scaling


@functools.lru_cache(maxsize=1)
def world() -> dict:
    """The mini world's vocabulary: shapes, colours (name → synset, RGB), backgrounds, sizes, positions."""
    return json.loads(WORLD_FILE.read_text())


def shape_names() -> list[str]:
    return list(world()["shapes"])


def colour_names() -> list[str]:
    return list(world()["colours"])


@dataclass(frozen=True)
class Factors:
    """Everything that was sampled to draw one image (recorded per item; captions are built from it)."""

    shape: str          # readable shape name, a key of world()["shapes"]
    colour: str         # fill colour name, a key of world()["colours"]
    size: str           # "small" | "medium" | "large"
    scale: float        # half-extent of the shape as a fraction of the image side
    cx: float           # centre, as fractions of the image side
    cy: float
    position: str       # "upper left", "top", … "lower right" (the centre's cell of a 3×3 grid)
    rotation: float     # degrees
    filled: bool        # filled vs outline
    background: str     # "plain" | "stripes" | "dots" | "checks" | "noise"
    bg_colour: str      # background colour name
    resolution: int     # pixels the shape was drawn at before resizing to the output (== size if not low-res)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Style:
    """Which nuisance values a dataset draws from (``None``: all of them)."""

    shapes: tuple[str, ...]
    colours: tuple[str, ...] | None = None
    bg_colours: tuple[str, ...] | None = None
    backgrounds: tuple[str, ...] | None = None   # a kind listed k times is drawn k times as often
    fill: str = "any"                   # "filled" | "outline" | "any"
    filled_prob: float = 0.5             # P(filled) when fill is "any"
    lowres: tuple[int, ...] = ()         # possible low resolutions …
    lowres_prob: float = 0.0             # … and how often one is used
    rotation_max: float | None = None    # ±degrees of rotation (None: the world's ``rotation_max``)

    def __post_init__(self):
        w = world()
        for name, values, known in (("shape", self.shapes, w["shapes"]), ("colour", self.colours, w["colours"]),
                                    ("background colour", self.bg_colours, w["colours"]),
                                    ("background", self.backgrounds, w["backgrounds"])):
            bad = [v for v in (values or ()) if v not in known]
            if bad:
                raise ValueError(f"unknown {name} {bad}; known: {list(known)}")
        if self.fill not in ("filled", "outline", "any"):
            raise ValueError(f"fill must be 'filled', 'outline' or 'any', not {self.fill!r}")
        if not 0.0 <= self.lowres_prob <= 1.0 or (self.lowres_prob > 0 and not self.lowres):
            raise ValueError("lowres_prob must be in [0, 1] and needs at least one lowres resolution")
        if self.rotation_max is not None and not 0 <= self.rotation_max <= 180:
            raise ValueError(f"rotation_max must be in [0, 180] degrees, not {self.rotation_max!r}")


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a dataset with ``seed`` (independent of every other item)."""
    return np.random.default_rng([int(seed), int(index)])


POSITIONS = (("upper left", "top", "upper right"), ("left", "center", "right"),
             ("lower left", "bottom", "lower right"))


def _position_name(cx: float, cy: float) -> str:
    return POSITIONS[min(int(cy * 3), 2)][min(int(cx * 3), 2)]


def sample_factors(style: Style, label_index: int | None, rng: np.random.Generator, image_size: int,
                   colour_label: bool = False) -> Factors:
    """Sample one image's factors; ``label_index`` fixes the shape (or the colour if ``colour_label``)."""
    w = world()
    shapes = style.shapes
    colours = style.colours or tuple(w["colours"])
    if colour_label:
        colour = colours[label_index]
        shape = shapes[rng.integers(len(shapes))]
    else:
        shape = shapes[label_index] if label_index is not None else shapes[rng.integers(len(shapes))]
        colour = colours[rng.integers(len(colours))]
    bg_choices = [c for c in (style.bg_colours or tuple(w["colours"])) if c != colour]
    bg_colour = bg_choices[rng.integers(len(bg_choices))]
    backgrounds = style.backgrounds or tuple(w["backgrounds"])
    background = backgrounds[rng.integers(len(backgrounds))]
    size = ("small", "medium", "large")[rng.integers(3)]
    lo, hi = w["sizes"][size]
    scale = float(rng.uniform(lo, hi))
    cx, cy = (float(v) for v in rng.uniform(scale + 0.02, 0.98 - scale, size=2))
    # Mostly upright, as objects in photos are: ±rotation_max degrees (the world's unless the style says).
    rotation_max = w["rotation_max"] if style.rotation_max is None else style.rotation_max
    rotation = float(rng.uniform(-rotation_max, rotation_max))
    filled = {"filled": True, "outline": False}.get(style.fill, bool(rng.random() < style.filled_prob))
    resolution = image_size
    if style.lowres and rng.random() < style.lowres_prob:
        resolution = int(style.lowres[rng.integers(len(style.lowres))])
    return Factors(shape, colour, size, scale, cx, cy, _position_name(cx, cy), rotation, filled,
                   background, bg_colour, resolution)


# ----------------------------------------------------------------------------- geometry (unit shapes)
def _circle_points(n: int = 48, rx: float = 1.0, ry: float = 1.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], 1)


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _crescent() -> np.ndarray:
    # Outer unit circle minus a circle of radius r1 shifted right by d: outer arc, then inner arc back.
    r1, d = 0.85, 0.5
    x = (1 - r1 ** 2 + d ** 2) / (2 * d)
    y = math.sqrt(1 - x * x)
    a0, b0 = math.atan2(y, x), math.atan2(y, x - d)
    outer = np.linspace(a0, 2 * np.pi - a0, 40)
    inner = np.linspace(2 * np.pi - b0, b0, 32)
    pts = np.concatenate([np.stack([np.cos(outer), np.sin(outer)], 1),
                          np.stack([d + r1 * np.cos(inner), r1 * np.sin(inner)], 1)])
    return pts - pts.mean(0)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1)
    pts -= (pts.max(0) + pts.min(0)) / 2
    return pts / np.abs(pts).max()


def _star() -> np.ndarray:
    outer, inner = _regular(5), 0.42 * _regular(5, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], 1).reshape(-1, 2)


def _spiral() -> np.ndarray:
    t = np.linspace(0, 2.6 * 2 * np.pi, 120)
    r = 0.12 + 0.88 * t / t[-1]
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def font_path() -> Path:
    """The glyph font shipped with hrvlm (``resources/fonts``: matplotlib 3.11's copy of DejaVu Sans Bold, its
    licence beside it): a package's data, not a system or plotting library's file, so every install draws the
    same pixels."""
    return RESOURCES / "fonts" / GLYPH_FONT


@functools.lru_cache(maxsize=1)
def font_sha256() -> str:
    """sha256 of the glyph font file: another font version draws other pixels, so caches key on it."""
    from hrvlm.core.storage import file_sha256

    return file_sha256(font_path())


@functools.lru_cache(maxsize=None)
def glyph_image(char: str, outline: bool) -> Image.Image:
    """The ``L``-mode image of ``char`` typeset at :data:`GLYPH_PX`, cropped to its ink; ``outline``
    draws only its contour (a stroke of 1/16 of the font size, inside transparent)."""
    font = ImageFont.truetype(str(font_path()), GLYPH_PX)
    img = Image.new("L", (3 * GLYPH_PX, 3 * GLYPH_PX), 0)
    stroke = GLYPH_PX // 16 if outline else 0
    ImageDraw.Draw(img).text((GLYPH_PX, GLYPH_PX), char, font=font, fill=0 if outline else 255,
                             stroke_width=stroke, stroke_fill=255)
    box = img.getbbox()
    if box is None:
        raise ValueError(f"the font {GLYPH_FONT} draws nothing for {char!r}")
    return img.crop(box)


def glyph_mask(char: str, f: Factors, big: int) -> Image.Image:
    """``char`` scaled so its longer side spans ``2 * f.scale`` of the image, rotated by ``f.rotation``
    and centred at ``(f.cx, f.cy)``, on a ``big``-pixel square mask."""
    glyph = glyph_image(char, not f.filled)
    extent = 2 * f.scale * big
    k = extent / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.size[0] * k)), max(1, round(glyph.size[1] * k))), Image.BILINEAR)
    glyph = glyph.rotate(-f.rotation, resample=Image.BILINEAR, expand=True)
    img = Image.new("L", (big, big), 0)
    img.paste(glyph, (round(f.cx * big - glyph.size[0] / 2), round(f.cy * big - glyph.size[1] / 2)))
    return img


def unit_shape(shape: str) -> tuple[np.ndarray, bool]:
    """Points of ``shape`` in [-1, 1]² and whether they form a closed polygon (False: a polyline)."""
    kind = world()["shapes"][shape]["draw"]
    pts = {
        "circle": lambda: _circle_points(),
        "ellipse": lambda: _circle_points(rx=1.0, ry=0.55),
        "semicircle": lambda: np.concatenate([_circle_points(48)[:25], [[-1.0, 0.0]]]) - [0, 0.42],
        "crescent": _crescent,
        "triangle": lambda: _regular(3) + [0, 0.2],
        "square": lambda: _regular(4, np.pi / 4) / math.sqrt(0.5) * 0.8,
        "rectangle": lambda: np.array([[-1, -0.5], [1, -0.5], [1, 0.5], [-1, 0.5]]),
        "rhombus": lambda: np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]]),
        "trapezoid": lambda: np.array([[-1, 0.55], [1, 0.55], [0.45, -0.55], [-0.45, -0.55]]),
        "parallelogram": lambda: np.array([[-1, 0.5], [0.4, 0.5], [1, -0.5], [-0.4, -0.5]]),
        "pentagon": lambda: _regular(5),
        "hexagon": lambda: _regular(6),
        "octagon": lambda: _regular(8, np.pi / 8),
        "star": _star,
        "heart": _heart,
        "spiral": _spiral,
    }[kind]()
    return np.asarray(pts, dtype=np.float64), kind != "spiral"


# ----------------------------------------------------------------------------- backgrounds
def _rgb(name: str) -> np.ndarray:
    return np.asarray(world()["colours"][name]["rgb"], dtype=np.float32) / 255.0


def background(f: Factors, rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float background of kind ``f.background`` in colour ``f.bg_colour``."""
    base = _rgb(f.bg_colour)
    # The pattern's second tone: the colour mixed halfway towards black or white (whichever contrasts).
    other = base * 0.5 if base.mean() > 0.5 else base * 0.5 + 0.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if f.background == "plain":
        mask = np.zeros((size, size), np.float32)
    elif f.background == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.15, 0.3)
        mask = ((xx * np.cos(angle) + yy * np.sin(angle)) / period % 1.0 < 0.5).astype(np.float32)
    elif f.background == "checks":
        period = rng.uniform(0.15, 0.3)
        mask = (((xx // period) + (yy // period)) % 2).astype(np.float32)
    elif f.background == "dots":
        period = rng.uniform(0.18, 0.3)
        dx, dy = (xx / period) % 1.0 - 0.5, (yy / period) % 1.0 - 0.5
        mask = (dx * dx + dy * dy < 0.06).astype(np.float32)
    elif f.background == "noise":
        mask = rng.random((size, size), dtype=np.float32)
    else:
        raise ValueError(f"unknown background {f.background!r}")
    return base * (1 - mask[..., None]) + other * mask[..., None]


def shape_mask(f: Factors, size: int) -> np.ndarray:
    """Anti-aliased ``[size, size]`` coverage of the shape in [0, 1]."""
    big = size * SUPERSAMPLE
    glyph = world()["shapes"][f.shape].get("glyph")
    if glyph is not None:
        return np.asarray(glyph_mask(glyph, f, big).resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    pts, closed = unit_shape(f.shape)
    theta = math.radians(f.rotation)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    xy = (pts @ rot.T) * f.scale * big + np.array([f.cx, f.cy]) * big
    coords = [tuple(p) for p in xy.tolist()]
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    stroke = max(1, round(big * (0.06 if f.filled else 0.035)))
    if not closed:  # the spiral is a stroke; "filled" draws it thicker
        draw.line(coords, fill=255, width=stroke, joint="curve")
    elif f.filled:
        draw.polygon(coords, fill=255)
    else:
        draw.line(coords + coords[:1], fill=255, width=stroke, joint="curve")
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def render(f: Factors, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """The ``[image_size, image_size, 3]`` uint8 image of factors ``f`` (``rng`` draws texture noise)."""
    res = f.resolution
    alpha = shape_mask(f, res)[..., None]
    img = background(f, rng, res) * (1 - alpha) + _rgb(f.colour) * alpha
    out = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    if res != image_size:  # low resolution: drawn small, shown blocky at the dataset's size
        out = np.array(Image.fromarray(out).resize((image_size, image_size), Image.NEAREST))
    return out


def render_item(style: Style, seed: int, index: int, label: int | None, image_size: int = 32,
                colour_label: bool = False) -> tuple[np.ndarray, Factors]:
    """Image and factors of item ``index`` of a dataset (same ``(seed, index)`` → same pixels)."""
    rng = item_rng(seed, index)
    f = sample_factors(style, label, rng, image_size, colour_label)
    return render(f, rng, image_size), f


def item_factors(style: Style, seed: int, index: int, label: int | None, image_size: int = 32,
                 colour_label: bool = False) -> Factors:
    """The factors of item ``index`` without drawing it (the same as :func:`render_item`'s)."""
    return sample_factors(style, label, item_rng(seed, index), image_size, colour_label)


def render_grid(images: Sequence[np.ndarray], cols: int = 8) -> np.ndarray:
    """Tile uint8 ``[S, S, 3]`` images into one array (for figures)."""
    s = images[0].shape[0]
    rows = -(-len(images) // cols)
    grid = np.full((rows * (s + 1) + 1, cols * (s + 1) + 1, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[1 + r * (s + 1):1 + r * (s + 1) + s, 1 + c * (s + 1):1 + c * (s + 1) + s] = im
    return grid
