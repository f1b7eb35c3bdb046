"""What downloaded bytes are: magic-byte sniffing and a full, capped decode check.

Headers and file extensions are not evidence; only the bytes are.
"""

from __future__ import annotations

import io
import re

from PIL import Image, ImageFile

from curation.download.reasons import (
    REASON_CORRUPT,
    REASON_DECOMPRESSION_BOMB,
    REASON_FORMAT,
    REASON_NOT_IMAGE,
    REASON_TRUNCATED,
    BadImageError,
)

# Allowed formats (sniffed name -> file extension in the image store).
FORMAT_EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}


def sniff_format(data: bytes) -> str:
    """Name the content from its magic bytes; headers and extensions are not evidence."""
    head = data[:64]
    magic = (
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"BM", "BMP"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"\x00\x00\x01\x00", "ICO"),
        (b"8BPS", "PSD"),
        (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
        (b"%PDF", "pdf"),
        (b"\x1f\x8b", "gzip"),
        (b"PK\x03\x04", "zip"),
    )
    if not head:
        return "empty"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    for prefix, name in magic:
        if head.startswith(prefix):
            return name
    return _sniff_text(data[:512])


def _sniff_text(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text:
        return "html"
    if b"<svg" in text:
        return "SVG"
    if text.startswith(b"<?xml"):
        return "xml"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def inspect_image_bytes(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an allowed, fully decodable image, else BadImageError.

    Reusable by any module that handles untrusted image bytes (dedupe, variants).
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With it set Pillow pads truncated images with grey instead of failing: refuse to run
        # rather than let broken images into the dataset.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    kind = sniff_format(data)
    if kind not in FORMAT_EXTENSIONS:
        if kind.isupper():  # a real image format, just not one we accept
            raise BadImageError(REASON_FORMAT, f"{kind} not allowed")
        raise BadImageError(REASON_NOT_IMAGE, kind)
    if kind == "webp" and len(data) < 8 + int.from_bytes(data[4:8], "little"):
        # Pillow's WebP decoder reports a cut file only as "could not create decoder object".
        raise BadImageError(REASON_TRUNCATED, "webp shorter than its RIFF header says")
    pil_format = _PIL_FORMATS[kind]
    try:
        with Image.open(io.BytesIO(data), formats=[pil_format]) as img:
            width, height = img.size
            _check_pixels(width, height, max_pixels)
            img.verify()  # structural checks (e.g. PNG chunk CRCs) without decoding
        # verify() leaves the image unusable; only a full decode proves every byte is there.
        with Image.open(io.BytesIO(data), formats=[pil_format]) as img:
            img.load()
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (MAX_IMAGE_PIXELS) fired first; it is a bomb all the same.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        detail = f"{found.group(1)} pixels" if found else "refused by Pillow"
        raise BadImageError(REASON_DECOMPRESSION_BOMB, f"{detail} > cap {max_pixels}") from exc
    except Exception as exc:  # any decoder error on hostile bytes is a bad image, not a crash
        raise _decoder_error(exc) from exc
    return kind, width, height


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(REASON_CORRUPT, f"size {width}x{height}")
    if width * height > max_pixels:
        raise BadImageError(
            REASON_DECOMPRESSION_BOMB, f"{width * height} pixels > cap {max_pixels}"
        )


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _decoder_error(exc: Exception) -> BadImageError:
    # Pillow names the buffer by its memory address ("<_io.BytesIO object at 0x7f…>"): the
    # reason feeds the data version, so it must read the same on every run.
    message = _OBJECT_REPR.sub("<image bytes>", str(exc)) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncat" in message.lower():
        return BadImageError(REASON_TRUNCATED, message[:120])
    return BadImageError(REASON_CORRUPT, message[:120])
