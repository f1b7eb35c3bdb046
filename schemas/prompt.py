"""The task format: one shared definition used by the dataset export, training and evaluation."""

from __future__ import annotations

DEFAULT_QUESTION = "What is shown in this image?"


def format_price(value: float) -> str:
    """Prices as the catalogue writes them: no trailing '.0' for whole amounts."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def format_answer(title: str, category3_code: str, full_price: float) -> str:
    """The assistant answer the model is trained to produce (reference format, unchanged)."""
    return f"Product: {title}, Category: {category3_code}, Full Price: {format_price(full_price)}"
