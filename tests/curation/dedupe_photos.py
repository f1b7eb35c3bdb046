"""A procedural labelled set of product photos for dedupe: sources, their edited copies (which
must cluster with them) and the look-alikes catalogues hold (which must not).

Sources are studio-style shots drawn with PIL: unrelated products on light backdrops (square,
landscape and portrait), the same shape re-shot in another colour, the two halves of one wide
photo, colourways (a source's photo with its hue turned: another product) and distinct products
on plain white at the same framing. Every source gets the edits catalogues really make.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross", "diamond", "arch")
TEXTURES = ("plain", "stripes", "check", "dots", "noise", "gradient")
PALETTE = (
    (25, 25, 28),
    (200, 170, 120),
    (30, 45, 95),
    (120, 25, 45),
    (180, 130, 70),
    (95, 105, 45),
    (200, 40, 40),
    (140, 180, 220),
    (60, 140, 90),
    (230, 200, 60),
)
EDITS = (
    "jpeg60",
    "half",
    "one_and_half",
    "crop",
    "brighter",
    "padding",
    "badge",
    "exif_rotated",
)


@dataclass(frozen=True)
class Look:
    shape: str
    texture: str
    colour: tuple[int, int, int]
    background: tuple[int, int, int]
    cx: float  # centre and radius as fractions of the image size
    cy: float
    r: float
    seed: int


def _shape_mask(look: Look, size: tuple[int, int], dx: float = 0, dy: float = 0) -> Image.Image:
    w, h = size
    cx, cy, r = look.cx * w + dx, look.cy * h + dy, look.r * min(w, h)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if look.shape == "ellipse":
        draw.ellipse((cx - 0.7 * r, cy - r, cx + 0.7 * r, cy + r), fill=255)
    elif look.shape == "rectangle":
        draw.rectangle((cx - 0.8 * r, cy - 0.6 * r, cx + 0.8 * r, cy + 0.6 * r), fill=255)
    elif look.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=0)
    elif look.shape == "arch":
        draw.pieslice((cx - 0.8 * r, cy - r, cx + 0.8 * r, cy + r), 180, 360, fill=255)
        draw.rectangle((cx - 0.8 * r, cy, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    else:
        n, inner = {"triangle": (3, 1.0), "star": (10, 0.45), "diamond": (4, 1.0)}.get(
            look.shape, (12, 0.4)
        )
        points = []
        for i in range(n):
            radius = r if i % 2 == 0 else r * inner
            angle = -math.pi / 2 + i * 2 * math.pi / n
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=255)
    return mask


def _texture(look: Look, size: tuple[int, int]) -> Image.Image:
    rng = random.Random(look.seed)
    layer = Image.new("RGB", size, look.colour)
    draw = ImageDraw.Draw(layer)
    ink = tuple(255 - c for c in look.colour)
    step = rng.randint(12, 22)
    w, h = size
    if look.texture == "stripes":
        for x in range(-h, w + h, step):
            draw.line((x, 0, x - h, h), fill=ink, width=4)
    elif look.texture == "check":
        for v in range(0, max(w, h), step):
            draw.line((v, 0, v, h), fill=ink, width=3)
            draw.line((0, v, w, v), fill=ink, width=3)
    elif look.texture == "dots":
        for x in range(step // 2, w, step):
            for y in range(step // 2, h, step):
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=ink)
    elif look.texture == "noise":
        noise = np.random.default_rng(look.seed).integers(-60, 60, (h // 8, w // 8, 1))
        arr = np.clip(np.asarray(layer, np.int16)[: h // 8, : w // 8] + noise, 0, 255)
        layer = Image.fromarray(arr.astype(np.uint8)).resize(size, Image.NEAREST)
    elif look.texture == "gradient":
        ramp = np.linspace(0.4, 1.3, w)[None, :, None] * np.asarray(look.colour)[None, None]
        layer = Image.fromarray(np.clip(np.broadcast_to(ramp, (h, w, 3)), 0, 255).astype("uint8"))
    return layer


def draw_look(look: Look, size: tuple[int, int] = (320, 320)) -> Image.Image:
    """A studio-style product shot: backdrop, soft shadow, textured silhouette, a small tag."""
    image = Image.new("RGB", size, look.background)
    shadow = _shape_mask(look, size, 6, 8).filter(ImageFilter.GaussianBlur(6))
    image.paste((90, 90, 90), (0, 0), shadow.point(lambda v: int(v * 0.4)))
    image.paste(_texture(look, size), (0, 0), _shape_mask(look, size))
    rng = random.Random(look.seed + 1)
    tx, ty = rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1]
    ImageDraw.Draw(image).rectangle((tx - 8, ty - 5, tx + 8, ty + 5), fill=(245, 245, 245))
    return image


def random_look(rng: random.Random, seed: int) -> Look:
    tone = rng.randint(200, 250)
    return Look(
        shape=rng.choice(SHAPES),
        texture=rng.choice(TEXTURES),
        colour=rng.choice(PALETTE),
        background=(tone, tone - rng.randint(0, 15), tone - rng.randint(0, 25)),
        cx=rng.uniform(0.38, 0.62),
        cy=rng.uniform(0.38, 0.62),
        r=rng.uniform(0.22, 0.34),
        seed=seed,
    )


def scene(rng: random.Random, seed: int) -> Image.Image:
    """A wide photo of several products; its left and right halves are different pictures."""
    canvas = draw_look(random_look(rng, seed), (640, 320))
    for k in range(3):
        look = replace(random_look(rng, seed * 10 + k), r=0.18)
        part = draw_look(look, (320, 320))
        x0 = rng.randint(0, 320)
        mask = _shape_mask(look, (320, 320)).filter(ImageFilter.GaussianBlur(1))
        canvas.paste(part, (x0, 0), mask)
    return canvas


def reshoot(look: Look, colour: tuple[int, int, int], rng: random.Random) -> Look:
    """The same product in another colour, photographed again: it sits a little elsewhere."""
    return replace(
        look,
        colour=colour,
        cx=look.cx + rng.choice((-1, 1)) * rng.uniform(0.05, 0.08),
        cy=look.cy + rng.choice((-1, 1)) * rng.uniform(0.05, 0.08),
        r=look.r * rng.uniform(0.88, 0.95),
        seed=look.seed + 1000,
    )


def other_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return next(c for c in PALETTE if abs(sum(c) - sum(colour)) > 150)


SIZES = ((320, 320), (320, 240), (240, 320))
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Source:
    image: Image.Image
    kind: str  # product | reshoot | scene_half | colourway | white_lookalike
    twin: int | None = None  # the source a colourway was turned from


def hue_turned(image: Image.Image, degrees: float) -> Image.Image:
    """The same photo with every hue turned: a colourway of the design."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(degrees / 360 * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _chromatic(colour: tuple[int, int, int]) -> bool:
    return max(colour) - min(colour) >= 60


def white_lookalikes(rng: random.Random, seed: int) -> list[Image.Image]:
    """Eight distinct products on white at one framing: pairs share a silhouette and differ in
    texture, in colour at a similar lightness, or both."""
    out = []
    pairs = (
        ("ellipse", ("plain", (30, 45, 95)), ("stripes", (120, 25, 45))),
        ("rectangle", ("plain", (200, 40, 40)), ("plain", (60, 140, 90))),
        ("diamond", ("check", (180, 130, 70)), ("plain", (60, 140, 90))),
        ("arch", ("plain", (95, 105, 45)), ("gradient", (30, 45, 95))),
    )
    for k, (shape, *variants) in enumerate(pairs):
        for j, (texture, colour) in enumerate(variants):
            look = Look(shape, texture, colour, WHITE, 0.5, 0.5, 0.3, seed=seed + 2 * k + j)
            out.append(draw_look(look))
    return out


def sources(n_random: int = 24, n_colour_pairs: int = 3, n_scenes: int = 5) -> list[Source]:
    rng = random.Random(7)
    kinds = rng.sample([(s, t) for s in SHAPES for t in TEXTURES], n_random + n_colour_pairs)
    looks = [replace(random_look(rng, i), shape=s, texture=t) for i, (s, t) in enumerate(kinds)]
    out = [Source(draw_look(look, rng.choice(SIZES)), "product") for look in looks[:n_random]]
    for look in looks[n_random:]:
        second = reshoot(look, other_colour(look.colour), rng)
        out += [Source(draw_look(look), "reshoot"), Source(draw_look(second), "reshoot")]
    for i in range(n_scenes):
        wide = scene(rng, 200 + i)
        out += [Source(wide.crop((0, 0, 320, 320)), "scene_half")]
        out += [Source(wide.crop((320, 0, 640, 320)), "scene_half")]
    chromatic = [k for k, look in enumerate(looks[:n_random]) if _chromatic(look.colour)]
    for k in chromatic[:6]:
        turned = hue_turned(out[k].image, rng.uniform(60, 300))
        out.append(Source(turned, "colourway", twin=k))
    out += [Source(image, "white_lookalike") for image in white_lookalikes(rng, 500)]
    return out


def _padded(image: Image.Image, rng: random.Random) -> Image.Image:
    """Letterboxed to a square (a square photo gets a border): the bars are white or light."""
    w, h = image.size
    side = max(w, h) if w != h else int(w * rng.uniform(1.15, 1.35))
    fill = WHITE if rng.random() < 0.7 else (240, 240, 240)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _badged(image: Image.Image, rng: random.Random) -> Image.Image:
    """A sale badge, 14-22 % of the short side, in a corner."""
    out = image.copy()
    w, h = out.size
    size = int(min(w, h) * rng.uniform(0.14, 0.22))
    inset = int(min(w, h) * rng.uniform(0.0, 0.03))
    x = inset if rng.random() < 0.5 else w - inset - size
    y = inset if rng.random() < 0.5 else h - inset - size
    fill = rng.choice([(210, 30, 40), (20, 20, 20), (240, 200, 20)])
    draw = ImageDraw.Draw(out)
    if rng.random() < 0.5:
        draw.ellipse((x, y, x + size, y + size), fill=fill)
    else:
        draw.rectangle((x, y, x + size, y + size // 2), fill=fill)
    draw.text((x + size * 0.2, y + size * 0.15), "SALE", fill=WHITE)
    return out


def edit(image: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """An edited copy and the JPEG quality to save it with."""
    w, h = image.size
    if kind == "jpeg60":
        return image, 60
    if kind == "half":
        return image.resize((w // 2, h // 2), Image.LANCZOS), 90
    if kind == "one_and_half":
        return image.resize((w * 3 // 2, h * 3 // 2), Image.LANCZOS), 90
    if kind == "crop":
        m = rng.uniform(0.03, 0.05)
        left, top = int(w * m * rng.random()), int(h * m * rng.random())
        return image.crop((left, top, left + int(w * (1 - m)), top + int(h * (1 - m)))), 90
    if kind == "brighter":
        return ImageEnhance.Brightness(image).enhance(1.10), 90
    if kind == "padding":
        return _padded(image, rng), 90
    if kind == "badge":
        return _badged(image, rng), 90
    raise ValueError(kind)


def _save(image: Image.Image, kind: str, path: Path, quality: int) -> None:
    if kind == "exif_rotated":  # stored on its side; EXIF orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif)
    else:
        image.save(path, format="JPEG", quality=quality)


def build_labelled_set(directory: Path) -> pl.DataFrame:
    """Rows as duplicate_clusters takes them, plus source, kind (the source's), edit, path."""
    rng = random.Random(11)
    rows = []
    for index, source in enumerate(sources()):
        for kind in ("original", *EDITS):
            if kind in ("original", "exif_rotated"):
                image, quality = source.image, 92
            else:
                image, quality = edit(source.image, kind, rng)
            path = directory / f"{index:02d}_{kind}.jpg"
            _save(image, kind, path, quality)
            rows.append(
                {
                    "row_id": f"r{len(rows):03d}",
                    "row_index": len(rows),
                    "sha256": f"sha{len(rows):03d}",  # every file differs in bytes
                    "width": image.width,
                    "height": image.height,
                    "title": f"product {index}",
                    "category3_code": "BAGS",
                    "full_price": 100.0 + index,
                    "source": index,
                    "kind": source.kind,
                    "twin": source.twin,
                    "edit": kind,
                    "path": str(path),
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)
