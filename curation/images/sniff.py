"""What untrusted bytes are: magic-byte sniffing, the format allow-list, a full capped decode.

Headers and file extensions are not evidence; only the bytes are. Downloads call
`inspect_image_bytes` before anything is stored; everything after reads stored files through
`curation.images.decode`.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from PIL import Image

from curation.images.decode import check_truncation_guard, open_image

# Reason codes of bytes that arrived but are not an allowed, intact, sanely sized image
# (status bad_image); the stable part of `reason` before ':'.
REASON_NOT_IMAGE = "not_image"  # sniffed as html/json/pdf/unknown/...
REASON_FORMAT = "format"  # a real image format outside the allow-list
REASON_TRUNCATED = "truncated"  # decoder ran out of data
REASON_CORRUPT = "corrupt"  # decoder rejected the data for another reason
REASON_DECOMPRESSION_BOMB = "decompression_bomb"  # width*height over the pixel cap


class BadImageError(ValueError):
    """Bytes that are not an allowed, intact, sanely sized image."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"


# Every format we can decode: sniffed name -> (file extension in the store, Pillow format, MIME).
# MPO (a camera's multi-picture JPEG) sniffs as JPEG; Pillow names it on open.
KNOWN_FORMATS: dict[str, tuple[str, str, str]] = {
    "jpeg": ("jpg", "JPEG", "image/jpeg"),
    "mpo": ("jpg", "MPO", "image/jpeg"),
    "png": ("png", "PNG", "image/png"),
    "webp": ("webp", "WEBP", "image/webp"),
    "gif": ("gif", "GIF", "image/gif"),
    "avif": ("avif", "AVIF", "image/avif"),
    "tiff": ("tiff", "TIFF", "image/tiff"),
    "bmp": ("bmp", "BMP", "image/bmp"),
}
# Pillow formats whose verify() checks anything (PNG: every chunk's CRC); for the others it
# is a no-op, and skipping it saves parsing the headers a second time.
_VERIFIED_FORMATS = frozenset({"PNG"})

FORMAT_EXTENSIONS: dict[str, str] = {name: ext for name, (ext, _, _) in KNOWN_FORMATS.items()}
# What shops and image CDNs serve. TIFF and BMP are off: print masters and screenshots, large and
# rarely a product photo; an operator can allow them (DownloadSettings.allowed_formats).
DEFAULT_ALLOWED_FORMATS: frozenset[str] = frozenset({"jpeg", "mpo", "png", "webp", "gif", "avif"})


def check_formats(formats: Collection[str]) -> frozenset[str]:
    unknown = sorted(set(formats) - set(KNOWN_FORMATS))
    if unknown:
        raise ValueError(f"unknown image formats {unknown}; known: {sorted(KNOWN_FORMATS)}")
    return frozenset(formats)


def accept_header(allowed: Collection[str]) -> str:
    """An HTTP Accept value naming exactly the allowed image types (then anything, at a low q:
    a server that ignores the list still answers, and the bytes are judged by sniffing)."""
    types = sorted({KNOWN_FORMATS[name][2] for name in allowed})
    return ",".join([*types, "*/*;q=0.1"])


def sniff_format(data: bytes) -> str:
    """Name the content from its magic bytes; headers and extensions are not evidence."""
    head = data[:64]
    magic = (
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"BM", "bmp"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
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
        return "avif" if head[8:12] in (b"avif", b"avis") else "HEIF"
    for prefix, name in magic:
        if head.startswith(prefix):
            return name
    return _sniff_text(data[:512])


def _sniff_text(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text:
        return "html"
    if b"<svg" in text:
        return "SVG"  # upper case: an image format we never decode (scripts, entities)
    if text.startswith(b"<?xml"):
        return "xml"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def inspect_image_bytes(
    data: bytes, max_pixels: int, allowed: Collection[str] = DEFAULT_ALLOWED_FORMATS
) -> tuple[str, int, int]:
    """(format, width, height) of an allowed, fully decodable image, else BadImageError."""
    kind = sniff_format(data)
    if kind not in KNOWN_FORMATS:
        if kind.isupper():  # a real image format, just not one we decode
            raise BadImageError(REASON_FORMAT, f"{kind} not allowed")
        raise BadImageError(REASON_NOT_IMAGE, kind)
    if kind not in allowed and kind != "jpeg":  # a JPEG may turn out to be an allowed MPO
        raise BadImageError(REASON_FORMAT, f"{kind.upper()} not allowed")
    if kind == "webp" and len(data) < 8 + int.from_bytes(data[4:8], "little"):
        # Pillow's WebP decoder reports a cut file only as "could not create decoder object".
        raise BadImageError(REASON_TRUNCATED, "webp shorter than its RIFF header says")
    if kind == "avif" and _boxes_overrun(data):
        # libavif reports a cut file only as "cannot identify image file".
        raise BadImageError(REASON_TRUNCATED, "avif shorter than its boxes say")
    pil_format = KNOWN_FORMATS[kind][1]
    check_truncation_guard()
    try:
        img = open_image(data, max_pixels=2**62, formats=[pil_format])
        width, height = img.size
        _check_pixels(width, height, max_pixels)
        if img.format == "MPO":
            kind = "mpo"
        if kind not in allowed:
            raise BadImageError(REASON_FORMAT, f"{kind.upper()} not allowed")
        if pil_format in _VERIFIED_FORMATS:
            img.verify()  # structural checks (PNG chunk CRCs) without decoding
            # verify() leaves the image unusable; open it again for the decode.
            img = open_image(data, max_pixels=2**62, formats=[pil_format])
        if pil_format == "JPEG":
            # libjpeg's DCT scaling decodes at 1/8 size but still reads every entropy-coded
            # byte, so a cut file fails as it does at full size, for half the CPU.
            img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
        img.load()  # only a decode to the end proves every byte is there
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


def _boxes_overrun(data: bytes) -> bool:
    """Whether an ISO-BMFF file's top-level boxes claim more bytes than there are."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        if size == 1 and offset + 16 <= len(data):
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size == 0:  # the last box runs to the end of the file
            return False
        if size < 8:
            return False  # malformed: the decoder will say how
        offset += size
    return offset > len(data)


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
