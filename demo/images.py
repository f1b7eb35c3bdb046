"""Procedural product pictures for the demo catalogue.

The look of a picture depends on its category (silhouette + surface pattern) and on the product
colour, with per-row jitter (position, size, background) so that two listings are never pixel
twins by accident. That makes the category learnable from the image, as it is in real photos.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 192

# A silhouette is drawn from primitives in unit coordinates (x right, y down, about [-1, 1],
# scaled by the product's radius): ("poly", points), ("rect", box), ("ellipse", box) and
# ("line", points, width). ink 255 adds to the mask, 0 cuts a gap (a belt, a pleat, a neck).
Point = tuple[float, float]
Primitive = tuple[str, int, tuple]


def _mirror(half: list[Point]) -> list[Point]:
    """A left-right symmetric outline from its right half (top to bottom)."""
    return half + [(-x, y) for x, y in reversed(half)]


def _hand() -> tuple[Primitive, ...]:
    fingers = tuple(
        ("line", 255, ((x, -0.05), (x * 1.08, -0.95 + abs(x) * 0.35)), 0.24)
        for x in (-0.42, -0.14, 0.14, 0.42)
    )
    return (
        ("rect", 255, (-0.55, -0.2, 0.55, 0.55)),
        ("rect", 255, (-0.45, 0.5, 0.45, 0.98)),
        ("line", 255, ((-0.5, 0.35), (-0.95, -0.1)), 0.26),
        *fingers,
    )


SILHOUETTES: dict[str, tuple[Primitive, ...]] = {
    "tote": (
        ("poly", 255, ((-0.65, -0.25), (0.65, -0.25), (0.9, 0.95), (-0.9, 0.95))),
        ("line", 255, ((-0.42, -0.2), (-0.42, -0.9), (0.42, -0.9), (0.42, -0.2)), 0.14),
    ),
    "crossbody": (
        ("rect", 255, (-0.6, 0.2, 0.6, 0.9)),
        ("poly", 0, ((-0.6, 0.2), (0.6, 0.2), (0.0, 0.55))),
        ("line", 255, ((-0.55, 0.25), (0.0, -0.95), (0.55, 0.25)), 0.1),
    ),
    "sneaker": (
        (
            "poly",
            255,
            (
                (-0.95, 0.5),
                (-0.95, -0.15),
                (-0.6, -0.3),
                (-0.3, -0.05),
                (0.35, 0.05),
                (0.85, 0.15),
                (0.98, 0.4),
                (0.95, 0.6),
                (-0.95, 0.6),
            ),
        ),
        ("line", 0, ((-0.95, 0.38), (0.97, 0.38)), 0.07),
    ),
    "boot": (
        (
            "poly",
            255,
            ((-0.6, -0.95), (0.05, -0.95), (0.1, 0.3), (0.8, 0.4), (0.95, 0.95), (-0.62, 0.95)),
        ),
    ),
    "long_scarf": (
        ("rect", 255, (-0.55, -0.75, -0.2, 0.95)),
        ("rect", 255, (0.15, -0.75, 0.5, 0.7)),
        ("ellipse", 255, (-0.6, -0.98, 0.55, -0.45)),
        ("line", 0, ((-0.55, 0.7), (-0.2, 0.7)), 0.06),
        ("line", 0, ((0.15, 0.45), (0.5, 0.45)), 0.06),
    ),
    "square_scarf": (
        ("poly", 255, ((0.0, -0.98), (0.98, 0.0), (0.0, 0.98), (-0.98, 0.0))),
        ("poly", 0, ((0.0, -0.6), (0.6, 0.0), (0.0, 0.6), (-0.6, 0.0))),
        ("ellipse", 255, (-0.22, -0.22, 0.22, 0.22)),
    ),
    "trench": (
        (
            "poly",
            255,
            _mirror(
                [
                    (0.0, -0.98),
                    (0.42, -0.98),
                    (0.72, -0.85),
                    (0.85, 0.25),
                    (0.64, 0.25),
                    (0.55, -0.35),
                    (0.52, -0.05),
                    (0.78, 0.98),
                ]
            ),
        ),
        ("line", 0, ((-0.6, -0.05), (0.6, -0.05)), 0.08),
        ("poly", 0, ((-0.16, -0.98), (0.16, -0.98), (0.0, -0.6))),
    ),
    "car_coat": (
        (
            "poly",
            255,
            _mirror(
                [
                    (0.0, -0.9),
                    (0.48, -0.9),
                    (0.78, -0.7),
                    (0.85, 0.75),
                    (0.65, 0.75),
                    (0.55, -0.3),
                    (0.55, 0.98),
                ]
            ),
        ),
        ("line", 0, ((0.0, -0.55), (0.0, 0.98)), 0.06),
    ),
    "quilted_jacket": (
        (
            "poly",
            255,
            _mirror(
                [
                    (0.0, -0.7),
                    (0.55, -0.7),
                    (0.98, -0.35),
                    (0.98, 0.55),
                    (0.75, 0.55),
                    (0.72, 0.0),
                    (0.65, 0.55),
                ]
            ),
        ),
        ("line", 0, ((-0.64, -0.25), (0.64, -0.25)), 0.07),
        ("line", 0, ((-0.64, 0.15), (0.64, 0.15)), 0.07),
    ),
    "sweater": (
        (
            "poly",
            255,
            _mirror(
                [(0.0, -0.7), (0.45, -0.8), (0.95, 0.75), (0.7, 0.85), (0.45, 0.1), (0.48, 0.8)]
            ),
        ),
        ("ellipse", 0, (-0.2, -0.86, 0.2, -0.6)),
    ),
    "cardigan": (
        (
            "poly",
            255,
            _mirror(
                [(0.0, -0.7), (0.45, -0.8), (0.95, 0.75), (0.7, 0.85), (0.45, 0.1), (0.48, 0.8)]
            ),
        ),
        ("poly", 0, ((-0.22, -0.85), (0.22, -0.85), (0.05, 0.85), (-0.05, 0.85))),
    ),
    "shirt": (
        (
            "poly",
            255,
            _mirror(
                [
                    (0.0, -0.75),
                    (0.4, -0.75),
                    (0.75, -0.6),
                    (0.9, 0.55),
                    (0.7, 0.6),
                    (0.55, -0.15),
                    (0.5, 0.95),
                ]
            ),
        ),
        ("poly", 255, ((-0.35, -0.95), (0.0, -0.7), (0.35, -0.95), (0.2, -0.45), (-0.2, -0.45))),
        ("line", 0, ((0.0, -0.45), (0.0, 0.95)), 0.05),
    ),
    "t_shirt": (
        (
            "poly",
            255,
            _mirror(
                [(0.0, -0.65), (0.35, -0.75), (0.98, -0.4), (0.8, -0.05), (0.52, -0.2), (0.52, 0.9)]
            ),
        ),
        ("ellipse", 0, (-0.25, -0.85, 0.25, -0.5)),
    ),
    "dress": (
        (
            "poly",
            255,
            _mirror(
                [
                    (0.0, -0.75),
                    (0.2, -0.8),
                    (0.22, -0.98),
                    (0.32, -0.98),
                    (0.36, -0.35),
                    (0.2, -0.05),
                    (0.85, 0.95),
                ]
            ),
        ),
    ),
    "skirt": (
        ("poly", 255, ((-0.45, -0.7), (0.45, -0.7), (0.9, 0.75), (-0.9, 0.75))),
        *(("line", 0, ((x * 0.45, -0.45), (x * 0.9, 0.75)), 0.06) for x in (-0.6, -0.2, 0.2, 0.6)),
    ),
    "trousers": (
        (
            "poly",
            255,
            (
                (-0.55, -0.98),
                (0.55, -0.98),
                (0.6, 0.98),
                (0.15, 0.98),
                (0.0, -0.35),
                (-0.15, 0.98),
                (-0.6, 0.98),
            ),
        ),
    ),
    "swim_shorts": (
        (
            "poly",
            255,
            (
                (-0.85, -0.5),
                (0.85, -0.5),
                (0.98, 0.55),
                (0.12, 0.55),
                (0.0, 0.1),
                (-0.12, 0.55),
                (-0.98, 0.55),
            ),
        ),
        ("line", 255, ((-0.1, -0.5), (-0.25, -0.05)), 0.07),
        ("line", 255, ((0.1, -0.5), (0.25, -0.05)), 0.07),
    ),
    "belt": (
        ("rect", 255, (-0.98, -0.17, 0.98, 0.17)),
        ("rect", 0, (-0.98, -0.4, -0.45, 0.4)),
        (
            "line",
            255,
            ((-0.85, -0.35), (-0.5, -0.35), (-0.5, 0.35), (-0.85, 0.35), (-0.85, -0.35)),
            0.1,
        ),
    ),
    "card_case": (
        ("rect", 255, (-0.6, -0.38, 0.6, 0.38)),
        ("line", 0, ((-0.45, -0.12), (0.45, -0.12)), 0.07),
    ),
    "zip_wallet": (
        ("rect", 255, (-0.95, -0.55, 0.95, 0.55)),
        ("line", 0, ((-0.8, -0.55), (-0.8, 0.4), (0.8, 0.4), (0.8, -0.55)), 0.06),
        ("poly", 255, ((0.75, 0.45), (0.98, 0.9), (0.85, 0.98), (0.65, 0.5))),
    ),
    "bucket_hat": (
        ("poly", 255, ((-0.5, -0.6), (0.5, -0.6), (0.6, 0.2), (-0.6, 0.2))),
        ("ellipse", 255, (-0.98, 0.05, 0.98, 0.5)),
    ),
    "earrings": (
        ("ellipse", 255, (-0.75, -0.8, -0.45, -0.5)),
        ("ellipse", 255, (0.45, -0.8, 0.75, -0.5)),
        ("line", 255, ((-0.6, -0.5), (-0.6, -0.1)), 0.08),
        ("line", 255, ((0.6, -0.5), (0.6, -0.1)), 0.08),
        ("poly", 255, ((-0.6, -0.2), (-0.32, 0.55), (-0.6, 0.95), (-0.88, 0.55))),
        ("poly", 255, ((0.6, -0.2), (0.88, 0.55), (0.6, 0.95), (0.32, 0.55))),
    ),
    "sunglasses": (
        ("rect", 255, (-0.95, -0.35, -0.1, 0.35)),
        ("rect", 255, (0.1, -0.35, 0.95, 0.35)),
        ("line", 255, ((-0.15, -0.2), (0.15, -0.2)), 0.1),
        ("line", 255, ((-0.95, -0.3), (-0.98, -0.8)), 0.08),
        ("line", 255, ((0.95, -0.3), (0.98, -0.8)), 0.08),
    ),
    "perfume": (
        ("rect", 255, (-0.55, -0.25, 0.55, 0.95)),
        ("rect", 255, (-0.15, -0.5, 0.15, -0.25)),
        ("rect", 255, (-0.3, -0.95, 0.3, -0.5)),
        ("rect", 0, (-0.35, 0.2, 0.35, 0.55)),
    ),
    "gloves": _hand(),
    "umbrella": (
        ("pie", 255, (-0.98, -0.9, 0.98, 0.5)),
        ("line", 255, ((0.0, -0.2), (0.0, 0.8), (-0.1, 0.95), (-0.3, 0.92), (-0.35, 0.75)), 0.09),
    ),
}

SHAPES: tuple[str, ...] = tuple(SILHOUETTES)


# Surface patterns. Coarse enough (a >= 4 px stroke every ~20-34 px at 192 px) to survive the
# 3x downscale to the tiny model's 64 px input, where one patch embedding reads a pattern's
# direction, stroke width and spacing directly.
@dataclass(frozen=True)
class Pattern:
    strokes: tuple[tuple[int, int], ...] = ()  # stroke directions (dx, dy)
    width: int = 5  # stroke width in px at 192 px
    step: tuple[int, int] = (18, 22)  # spacing range in px
    dot: int = 0  # dot radius (dots on the step grid); 0 = none
    plus: int = 0  # half-length of plus signs on the step grid; 0 = none
    # Saturated ink (gold on dark products, royal blue on light ones) instead of cream / dark
    # brown: two categories that share a stroke layout still differ in colour at a glance.
    accent: bool = False


PATTERN_STYLES: dict[str, Pattern] = {
    "plain": Pattern(),
    "dots": Pattern(dot=4),
    "polka": Pattern(dot=8, step=(30, 34)),
    "check": Pattern(strokes=((1, 0), (0, 1)), width=4),
    "windowpane": Pattern(strokes=((1, 0), (0, 1)), width=4, step=(32, 36)),
    "tartan": Pattern(strokes=((1, 0), (0, 1)), width=9, step=(34, 40), accent=True),
    "stripes": Pattern(strokes=((1, -1),)),  # diagonal, rising
    "twill": Pattern(strokes=((1, 1),)),  # diagonal, falling
    "bands": Pattern(strokes=((1, 0),)),
    "rugby": Pattern(strokes=((1, 0),), width=11, step=(28, 32)),  # wide horizontal bands
    "pinstripe": Pattern(strokes=((0, 1),)),
    "awning": Pattern(strokes=((0, 1),), width=11, step=(28, 32)),  # wide vertical bands
    "argyle": Pattern(strokes=((1, -1), (1, 1))),
    "crosses": Pattern(plus=6, step=(24, 28)),
}
# Every layout above but plain and tartan also comes in accent ink ("dots_accent", ...).
PATTERN_STYLES |= {
    f"{name}_accent": replace(style, accent=True)
    for name, style in list(PATTERN_STYLES.items())
    if style.strokes or style.dot or style.plus
    if not style.accent
}
PATTERNS: tuple[str, ...] = tuple(PATTERN_STYLES)


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


def _silhouette_mask(
    shape: str, size: int, cx: float, cy: float, r: float, tilt: float = 0.0
) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)

    def at(x: float, y: float) -> tuple[float, float]:
        return cx + x * r, cy + y * r

    for kind, ink, geometry, *width in SILHOUETTES[shape]:
        if kind == "poly":
            draw.polygon([at(x, y) for x, y in geometry], fill=ink)
        elif kind == "line":
            points = [at(x, y) for x, y in geometry]
            draw.line(points, fill=ink, width=max(1, round(width[0] * r)), joint="curve")
        else:
            x0, y0, x1, y1 = geometry
            box = (*at(x0, y0), *at(x1, y1))
            if kind == "rect":
                draw.rectangle(box, fill=ink)
            elif kind == "ellipse":
                draw.ellipse(box, fill=ink)
            else:  # "pie": the upper half of the ellipse (an umbrella canopy)
                draw.pieslice(box, 180, 360, fill=ink)
    # A slight tilt, as in real shots; rotating the mask keeps every primitive consistent.
    return mask.rotate(tilt, resample=Image.BILINEAR, center=(cx, cy)) if tilt else mask


def _pattern_layer(look: ProductLook, size: int, rng: random.Random) -> Image.Image:
    """The product colour with its pattern; the ink contrasts with the colour so the pattern
    also survives grayscale hashing."""
    style = PATTERN_STYLES[look.pattern]
    base = Image.new("RGB", (size, size), look.colour)
    draw = ImageDraw.Draw(base)
    lum = sum(look.colour) / 3
    if style.accent:
        ink = (240, 190, 30) if lum < 128 else (25, 60, 190)
    else:
        ink = (235, 225, 205) if lum < 128 else (40, 35, 30)
    step = rng.randint(*style.step)
    offset = rng.randint(0, step - 1)
    for dx, dy in style.strokes:
        # Parallel strokes `step` apart across the whole tile, perpendicular to (dx, dy).
        nx, ny = -dy / math.hypot(dx, dy), dx / math.hypot(dx, dy)
        for k in range(-2 * size // step, 2 * size // step + 1):
            ox, oy = (k * step + offset) * nx, (k * step + offset) * ny
            line = (ox - dx * size * 2, oy - dy * size * 2, ox + dx * size * 2, oy + dy * size * 2)
            draw.line(line, fill=ink, width=style.width)
    for x in range(offset, size + step, step):
        for y in range(offset, size + step, step):
            if style.dot:
                draw.ellipse((x - style.dot, y - style.dot, x + style.dot, y + style.dot), ink)
            if style.plus:
                draw.rectangle((x - style.plus, y - 2, x + style.plus, y + 2), fill=ink)
                draw.rectangle((x - 2, y - style.plus, x + 2, y + style.plus), fill=ink)
    return base


def _backdrop(size: int, rng: random.Random) -> Image.Image:
    """A light studio backdrop with its own light fall-off and a few soft props: listings differ
    in large, low-frequency ways (light, floor, set dressing), which is what perceptual hashes
    see. Props stay low-contrast and blurred so they never read as a second product."""
    tone = rng.randint(175, 250)
    far = max(90, tone - rng.randint(30, 90))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = Image.linear_gradient("L").resize((size, size)).rotate(math.degrees(angle))
    light = ramp.point(lambda v: int(far + (tone - far) * v / 255))
    tint = (rng.uniform(0.9, 1.0), rng.uniform(0.88, 1.0), rng.uniform(0.85, 1.0))
    image = Image.merge("RGB", [light.point(lambda v, t=t: int(v * t)) for t in tint])
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):  # props: a plinth, a box, a plant pot
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        w, h = rng.uniform(0.15, 0.5) * size, rng.uniform(0.15, 0.5) * size
        grey = max(0, min(255, tone + rng.choice((-1, 1)) * rng.randint(20, 45)))
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=(grey,) * 3)
    return image.filter(ImageFilter.GaussianBlur(6))


def draw_product(look: ProductLook, seed: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A studio-style shot: a varied backdrop, the product silhouette (large, slightly tilted
    and off-centre), a soft shadow and a small tag."""
    rng = random.Random(seed)
    image = _backdrop(size, rng)
    cx = size / 2 + rng.uniform(-0.08, 0.08) * size
    cy = size / 2 + rng.uniform(-0.08, 0.08) * size
    radius = size * rng.uniform(0.33, 0.4)
    tilt = rng.uniform(-6, 6)
    shadow = _silhouette_mask(look.shape, size, cx + 5, cy + 7, radius, tilt)
    shadow = shadow.filter(ImageFilter.GaussianBlur(5)).point(lambda v: v * 0.35)
    image.paste((30, 30, 30), (0, 0), shadow)
    mask = _silhouette_mask(look.shape, size, cx, cy, radius, tilt)
    image.paste(_pattern_layer(look, size, rng), (0, 0), mask)
    # A small random tag (logo, price label) makes each listing's photo its own.
    ax, ay = cx + rng.uniform(-0.4, 0.4) * radius, cy + rng.uniform(-0.4, 0.4) * radius
    accent = rng.randint(3, 6)
    ImageDraw.Draw(image).rectangle(
        (ax - accent, ay - accent, ax + accent, ay + accent), fill=(rng.randint(150, 220),) * 3
    )
    return image


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode == "CMYK":
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    elif fmt == "AVIF":
        image.save(buffer, format="AVIF", quality=quality)
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
        # 2-3%: with products filling ~70% of the frame, a 3-5% crop moved some pictures' phash
        # to 10-12 bits from the original, at or past the dedupe threshold (10).
        margin = rng.uniform(0.02, 0.03)
        dx, dy = int(width * margin / 2), int(height * margin / 2)
        return image.crop((dx, dy, width - dx, height - dy))
    if kind == "reencode":
        return image  # the caller re-encodes at a lower JPEG quality
    raise ValueError(f"unknown near-duplicate kind: {kind}")
