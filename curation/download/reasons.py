"""Why a URL produced no image: reason codes and the two exceptions that carry them.

A result's `reason` reads `"<code>: <detail>"`; the code is the stable part reports and tests
group by.
"""

from __future__ import annotations

# -> status download_failed: the bytes never arrived, or policy refused to fetch them.
REASON_BAD_URL = "bad_url"  # empty or unparseable URL
REASON_SCHEME = "scheme"  # scheme not in policy.allowed_schemes (or redirect to non-http)
REASON_SSRF = "ssrf"  # host resolves to a private/loopback/metadata/... address
REASON_DNS = "dns"  # host name did not resolve
REASON_CONNECTION = "connection"  # refused, reset, protocol error
REASON_TLS = "tls"  # certificate or handshake failure (not retried: it will not fix itself)
REASON_TIMEOUT = "timeout"  # connect or read timeout
REASON_DEADLINE = "deadline"  # the per-URL total deadline ran out
REASON_HTTP_STATUS = "http_status"  # non-200 final status
REASON_REDIRECTS = "redirects"  # more than policy.max_redirects hops
REASON_TOO_LARGE = "too_large"  # body (declared, wire or decoded) over policy.max_bytes
REASON_CONTENT_ENCODING = "content_encoding"  # compression we cannot decode with a cap
REASON_NOT_FOUND = "not_found"  # fsspec path does not exist
REASON_PERMISSION = "permission"  # fsspec path not readable
REASON_IO = "io"  # other fsspec/OS read error
# -> status bad_image: see curation.images.sniff (REASON_NOT_IMAGE, REASON_FORMAT, ...).


class FetchError(Exception):
    """A download failure with its reason code; `retryable` drives the retry loop."""

    def __init__(
        self, code: str, detail: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1


def reason_code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0].strip()
