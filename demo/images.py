"""Procedural product pictures for the demo catalogue.

The look of a picture (`demo.looks`) depends on its category (silhouette + surface pattern)
and on the product colour, with per-row jitter (position, size, background) so that two listings
are never pixel twins by accident. That makes the category learnable from the image, as it is in
real photos.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image, ImageDraw, ImageFilter

from demo.looks import PATTERN_STYLES, SILHOUETTES, ProductLook

IMAGE_SIZE = 192


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
