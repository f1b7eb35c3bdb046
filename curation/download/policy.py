"""Which URLs may be fetched: the downloader's knobs, the scheme rule and the SSRF address check.

Every catalogue URL is untrusted: it may point at the cloud metadata service or an intranet
host. A host is resolved once and refused if any of its addresses is forbidden; the vetted
address is what transport dials, which closes the DNS-rebinding gap.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from curation.download.reasons import (
    REASON_BAD_URL,
    REASON_DNS,
    REASON_SCHEME,
    REASON_SSRF,
    FetchError,
)
from curation.images.sniff import DEFAULT_ALLOWED_FORMATS, check_formats

HTTP_SCHEMES = frozenset({"http", "https"})
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# Checked in order; the first match names the problem in the reason.
_ADDRESS_PROBLEMS = (
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_unspecified", "unspecified"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


@lru_cache(maxsize=64)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[ipaddress._BaseNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


@dataclass(frozen=True)
class DownloadPolicy:
    """Every knob of the downloader; tests shrink the times and sizes."""

    # Reaching a healthy CDN takes well under a second; 5 s tolerates a slow handshake.
    connect_timeout_s: float = 5.0
    # Max silence between two socket reads (also capped by what is left of the deadline).
    read_timeout_s: float = 10.0
    # Total wall time per URL over all attempts, redirects and body reads: a server dripping
    # bytes cannot hold a worker longer than this.
    deadline_s: float = 30.0
    # Transient failures (connection errors, timeouts, 429, 5xx) get this many tries in all.
    max_attempts: int = 4
    # Exponential backoff with full jitter: wait U(0, min(max, base * 2**(attempt-1))). A 0.25 s
    # base (AWS's standard retry mode uses 0.1 s) caps a permanent 5xx's 4 tries at 1.75 s of
    # waiting, 3.5 s with 0.5 s, which set the tail of a whole batch (bench/RESULTS.md, download);
    # a 429 or 503 that needs longer says so in Retry-After, which is honoured.
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    # Product images redirect once or twice (CDN, http->https); more is a loop or a trick.
    max_redirects: int = 5
    # Largest body accepted (on the wire and after decompression): product photos are < 5 MiB.
    max_bytes: int = 20 * 1024 * 1024
    # Largest width*height decoded; checked before decoding, independent of Pillow's own limit.
    max_pixels: int = 40_000_000
    # Schemes a catalogue URL may use; add "file"/"s3"/... only for trusted catalogues.
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    # Lets URLs reach loopback/private/metadata hosts: local test servers, intranet catalogues.
    allow_private_hosts: bool = False
    # Narrower than allow_private_hosts: only these CIDRs (e.g. a test server on 127.0.0.1/32).
    # The cloud metadata address stays blocked even when covered here.
    allowed_private_networks: tuple[str, ...] = ()
    # Honest identification: some CDNs reject the default python-urllib3 agent.
    user_agent: str = "catalogue-vlm-image-fetcher/0.1"
    # Read granularity: the deadline and the byte cap are checked between chunks.
    chunk_size: int = 64 * 1024
    # Successes recorded in the URL index per durable write (one fsynced file), and the most
    # seconds a success waits for its batch: a kill -9 re-fetches at most one batch plus the
    # downloads in flight. 256 costs < 1 s of work at a few hundred images/s.
    index_batch_size: int = 256
    index_flush_s: float = 5.0
    # Image formats accepted (curation.images.sniff names); the Accept header names the same.
    allowed_formats: frozenset[str] = DEFAULT_ALLOWED_FORMATS

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allowed_schemes", frozenset(s.lower() for s in self.allowed_schemes)
        )
        object.__setattr__(self, "allowed_private_networks", tuple(self.allowed_private_networks))
        object.__setattr__(self, "allowed_formats", check_formats(self.allowed_formats))
        _parse_networks(self.allowed_private_networks)  # fail at construction, not per URL
        if min(self.max_attempts, self.max_bytes, self.index_batch_size) < 1:
            raise ValueError("max_attempts, max_bytes and index_batch_size must be positive")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")


DEFAULT_POLICY = DownloadPolicy()


def _scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return scheme or "file"  # a bare path is a local file


def check_scheme(url: str, policy: DownloadPolicy, *, redirect: bool = False) -> str:
    scheme = _scheme_of(url)
    # A redirect may only lead to http(s): a server must not be able to point us at file://.
    if scheme not in policy.allowed_schemes or (redirect and scheme not in HTTP_SCHEMES):
        raise FetchError(REASON_SCHEME, f"{scheme} not allowed")
    return scheme


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress._BaseAddress:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), which is where packets
    end up: `64:ff9b::a9fe:a9fe` is the metadata service to a NAT64 gateway, and
    `is_global` alone calls it public."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour or ip


def address_problem(address: str, policy: DownloadPolicy) -> str | None:
    """Why the policy forbids connecting to this IP address, or None when it may."""
    ip = _embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))
    if policy.allow_private_hosts:
        return None
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    if any(ip in net for net in _parse_networks(policy.allowed_private_networks)):
        return None
    for attribute, label in _ADDRESS_PROBLEMS:
        if getattr(ip, attribute):
            return label
    return None if ip.is_global else "not globally routable"


def vet_host(host: str, port: int, policy: DownloadPolicy) -> str:
    """Resolve once, refuse if ANY address is forbidden, return the address to connect to.

    Connecting to the returned address (not the name again) closes the DNS-rebinding gap.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        retryable = exc.errno == socket.EAI_AGAIN
        raise FetchError(REASON_DNS, f"{host} did not resolve", retryable=retryable) from exc
    except UnicodeError as exc:
        raise FetchError(REASON_BAD_URL, f"bad host {host!r}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(REASON_DNS, f"{host} did not resolve")
    for address in addresses:
        problem = address_problem(address, policy)
        if problem:
            raise FetchError(REASON_SSRF, f"{address} is {problem}")
    return addresses[0]
