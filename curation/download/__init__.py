"""Robust, concurrent image download: untrusted URLs in, verified content-addressed images out.

- `policy`: the knobs (`DownloadPolicy`) and which URLs and addresses may be fetched (SSRF).
- `transport`: one attempt at one URL, with a byte cap, a deadline and a watchdog.
- `connections`: keep-alive connections shared within a batch per vetted (scheme, host, address,
  port).
- what the bytes are (sniffing, the format allow-list, a full decode) is
  `curation.images.sniff`, shared with every other reader of image bytes.
- `url_index`: the resume index, successes recorded in batches of durable writes.
- `batch`: the retry scheduler and the result table.
"""

from curation.download.batch import (
    FetchStats,
    ImageFetchResult,
    fetch_image,
    fetch_images,
    fetch_stats,
)
from curation.download.policy import DEFAULT_POLICY, DownloadPolicy, address_problem
from curation.download.reasons import FetchError, reason_code
from curation.download.url_index import URL_INDEX_DIR
from curation.images.sniff import (
    FORMAT_EXTENSIONS,
    BadImageError,
    inspect_image_bytes,
    sniff_format,
)

__all__ = [
    "DEFAULT_POLICY",
    "FORMAT_EXTENSIONS",
    "URL_INDEX_DIR",
    "BadImageError",
    "DownloadPolicy",
    "FetchError",
    "FetchStats",
    "ImageFetchResult",
    "address_problem",
    "fetch_image",
    "fetch_images",
    "fetch_stats",
    "inspect_image_bytes",
    "reason_code",
    "sniff_format",
]
