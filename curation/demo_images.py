"""Procedural product pictures for the demo catalogue.

The look of a picture depends on its category (silhouette + surface pattern) and on the product
colour, with per-row jitter (position, size, background) so that two listings are never pixel
twins by accident. That makes the category learnable from the image, as it is in real photos.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 192

SHAPES: tuple[str, ...] = (
    "rectangle",
    "ellipse",
    "triangle",
    "trapezoid",
    "diamond",
    "hexagon",
    "ring",
    "cross",
    "star",
    "tall_rectangle",
    "wide_ellipse",
    "arch",
)
PATTERNS: tuple[str, ...] = ("plain", "stripes", "check", "dots")

# Product colours (name -> RGB). Names appear in itemurls; titles stay shared across colours.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 28),
    "archive beige": (200, 170, 120),
    "navy": (30, 45, 95),
    "burgundy": (120, 25, 45),
    "camel": (180, 130, 70),
    "olive": (95, 105, 45),
    "white": (240, 238, 232),
    "red": (200, 40, 40),
    "pale blue": (140, 180, 220),
    "grey melange": (130, 130, 135),
}


@dataclass(frozen=True)
class ProductLook:
    """What a picture shows: the category's silhouette and pattern, the product's colour."""

    shape: str
    pattern: str
    colour: tuple[int, int, int]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def regular(n: int, phase: float) -> list[tuple[float, float]]:
        step = 2 * math.pi / n
        return [
            (cx + r * math.cos(phase + i * step), cy + r * math.sin(phase + i * step))
            for i in range(n)
        ]

    if shape == "triangle":
        return regular(3, -math.pi / 2)
    if shape == "diamond":
        return regular(4, 0.0)
    if shape == "hexagon":
        return regular(6, 0.0)
    if shape == "trapezoid":
        return [
            (cx - r * 0.55, cy - r * 0.8),
            (cx + r * 0.55, cy - r * 0.8),
            (cx + r, cy + r * 0.8),
            (cx - r, cy + r * 0.8),
        ]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, b = r * 0.35, r
        return [
            (cx - a, cy - b),
            (cx + a, cy - b),
            (cx + a, cy - a),
            (cx + b, cy - a),
            (cx + b, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + b),
            (cx - a, cy + b),
            (cx - a, cy + a),
            (cx - b, cy + a),
            (cx - b, cy - a),
            (cx - a, cy - a),
        ]
    raise ValueError(f"not a polygon shape: {shape}")


def _silhouette_mask(shape: str, size: int, cx: float, cy: float, r: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = {
        "rectangle": (cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8),
        "tall_rectangle": (cx - r * 0.45, cy - r, cx + r * 0.45, cy + r),
        "ellipse": (cx - r * 0.75, cy - r, cx + r * 0.75, cy + r),
        "wide_ellipse": (cx - r, cy - r * 0.5, cx + r, cy + r * 0.5),
        "ring": (cx - r, cy - r, cx + r, cy + r),
        "arch": (cx - r * 0.8, cy - r, cx + r * 0.8, cy + r),
    }
    if shape in ("rectangle", "tall_rectangle"):
        draw.rectangle(box[shape], fill=255)
    elif shape in ("ellipse", "wide_ellipse"):
        draw.ellipse(box[shape], fill=255)
    elif shape == "ring":
        draw.ellipse(box["ring"], fill=255)
        draw.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), fill=0)
    elif shape == "arch":
        draw.pieslice(box["arch"], 180, 360, fill=255)
        draw.rectangle((cx - r * 0.8, cy, cx + r * 0.8, cy + r * 0.8), fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=255)
    return mask


def _pattern_layer(look: ProductLook, size: int, rng: random.Random) -> Image.Image:
    base = Image.new("RGB", (size, size), look.colour)
    draw = ImageDraw.Draw(base)
    # The pattern colour contrasts with the product colour so it survives grayscale hashing.
    lum = sum(look.colour) / 3
    ink = (235, 225, 205) if lum < 128 else (40, 35, 30)
    step = rng.randint(11, 15)
    offset = rng.randint(0, step - 1)
    if look.pattern == "stripes":
        for x in range(-size, size * 2, step):
            draw.line((x + offset, 0, x + offset - size, size), fill=ink, width=3)
    elif look.pattern == "check":
        for v in range(offset, size, step):
            draw.line((v, 0, v, size), fill=ink, width=2)
            draw.line((0, v, size, v), fill=ink, width=2)
    elif look.pattern == "dots":
        for x in range(offset, size, step):
            for y in range(offset, size, step):
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=ink)
    return base


def _backdrop(size: int, rng: random.Random) -> Image.Image:
    """A studio backdrop with its own light fall-off and props: real listings differ in large,
    low-frequency ways (light, floor, set dressing), which is what perceptual hashes see."""
    tone = rng.randint(150, 250)
    far = max(60, tone - rng.randint(40, 110))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = Image.linear_gradient("L").resize((size, size)).rotate(math.degrees(angle))
    light = ramp.point(lambda v: int(far + (tone - far) * v / 255))
    tint = (rng.uniform(0.9, 1.0), rng.uniform(0.88, 1.0), rng.uniform(0.85, 1.0))
    image = Image.merge("RGB", [light.point(lambda v, t=t: int(v * t)) for t in tint])
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):  # props: a plinth, a box, a plant pot
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        w, h = rng.uniform(0.1, 0.4) * size, rng.uniform(0.1, 0.4) * size
        grey = rng.randint(40, 230)
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=(grey,) * 3)
    return image.filter(ImageFilter.GaussianBlur(2))


def draw_product(look: ProductLook, seed: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A studio-style shot: a varied backdrop, the product silhouette, a soft shadow."""
    rng = random.Random(seed)
    image = _backdrop(size, rng)
    cx = size / 2 + rng.uniform(-0.15, 0.15) * size
    cy = size / 2 + rng.uniform(-0.15, 0.15) * size
    radius = size * rng.uniform(0.24, 0.34)
    shadow = _silhouette_mask(look.shape, size, cx + 5, cy + 7, radius)
    shadow = shadow.filter(ImageFilter.GaussianBlur(5)).point(lambda v: v * 0.35)
    image.paste((30, 30, 30), (0, 0), shadow)
    mask = _silhouette_mask(look.shape, size, cx, cy, radius)
    image.paste(_pattern_layer(look, size, rng), (0, 0), mask)
    # A small random accent (logo tag, buckle) makes each listing's photo its own.
    ax, ay = cx + rng.uniform(-0.5, 0.5) * radius, cy + rng.uniform(-0.5, 0.5) * radius
    accent = rng.randint(4, 9)
    ImageDraw.Draw(image).rectangle(
        (ax - accent, ay - accent, ax + accent, ay + accent), fill=(rng.randint(150, 220),) * 3
    )
    return image


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def placeholder_image(size: int = IMAGE_SIZE) -> Image.Image:
    """The 'image coming soon' tile retailers show when a photo is missing."""
    image = Image.new("RGB", (size, size), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        (size * 0.3, size * 0.3, size * 0.7, size * 0.62), outline=(170, 170, 170), width=4
    )
    draw.ellipse(
        (size * 0.42, size * 0.38, size * 0.58, size * 0.54), outline=(170, 170, 170), width=4
    )
    draw.text((size * 0.22, size * 0.72), "IMAGE COMING SOON", fill=(150, 150, 150))
    return image


def near_duplicate(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """A re-upload of the same photo: never larger than the original, so the original stays
    canonical under the 'largest resolution, then lowest row_index' rule."""
    width, height = image.size
    if kind == "resize":
        factor = rng.uniform(0.6, 0.85)
        return image.resize((int(width * factor), int(height * factor)), Image.LANCZOS)
    if kind == "crop":
        margin = rng.uniform(0.03, 0.05)
        dx, dy = int(width * margin / 2), int(height * margin / 2)
        return image.crop((dx, dy, width - dx, height - dy))
    if kind == "reencode":
        return image  # the caller re-encodes at a lower JPEG quality
    raise ValueError(f"unknown near-duplicate kind: {kind}")
