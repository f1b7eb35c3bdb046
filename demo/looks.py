"""What a demo picture shows, as data: each silhouette's drawing primitives, each surface
pattern's strokes and dots, the product colours. `demo.images` draws them; `demo.taxonomy`
says which silhouette and pattern each category wears."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
