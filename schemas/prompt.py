"""The task format: one shared definition used by the dataset export, training and evaluation.

`format_answer` writes the answer the model learns to produce and `parse_answer` reads one back
with the same literals, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_QUESTION = "What is shown in this image?"
ANSWER_PREFIX = "Product: "
CATEGORY_SEPARATOR = ", Category: "
PRICE_SEPARATOR = ", Full Price: "
_PRICE = re.compile(r"\d+(?:\.\d+)?")


def format_price(value: float) -> str:
    """Prices as the catalogue writes them: no trailing '.0' for whole amounts."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def format_answer(title: str, category3_code: str, full_price: float) -> str:
    """The assistant answer the model is trained to produce (reference format, unchanged)."""
    price = format_price(full_price)
    return f"{ANSWER_PREFIX}{title}{CATEGORY_SEPARATOR}{category3_code}{PRICE_SEPARATOR}{price}"


@dataclass(frozen=True)
class ParsedAnswer:
    title: str
    category: str
    price: float


def parse_answer(text: str | None) -> ParsedAnswer | None:
    """`Product: {title}, Category: {category}, Full Price: {price}` or None.

    Split from the right (titles may contain commas, even ", Category: "); every part must be
    non-empty and the price a plain number; trailing text after the price is a miss."""
    if not text:
        return None
    text = text.strip()
    if not text.startswith(ANSWER_PREFIX) or PRICE_SEPARATOR not in text:
        return None
    head, price_text = text[len(ANSWER_PREFIX) :].rsplit(PRICE_SEPARATOR, 1)
    if CATEGORY_SEPARATOR not in head or not _PRICE.fullmatch(price_text.strip()):
        return None
    title, category = (part.strip() for part in head.rsplit(CATEGORY_SEPARATOR, 1))
    if not title or not category:
        return None
    return ParsedAnswer(title=title, category=category, price=float(price_text))
