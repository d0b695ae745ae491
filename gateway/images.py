"""Remote images fetched for backends that take only inline base64 data (Ollama), bounded in size
and time, never from the box itself (loopback, link-local, unspecified, multicast addresses) and, when
the operator lists them in ``gateway.image-fetch-networks``, only from those networks."""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from gateway import tls, turns
from gateway.config import Config, Network
from gateway.errors import ImageUnavailable

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
)


# Where a client-given URL must never lead by default: the box's own services (the engines' ports are
# published on loopback only), cloud metadata (169.254.169.254) and other link-local hosts, the
# unspecified address (Linux connects 0.0.0.0 to the box itself) and multicast. Private LAN ranges
# stay open: cameras live there. An explicit allow-list replaces this list.
REFUSED_BY_DEFAULT: tuple[Network, ...] = tuple(ipaddress.ip_network(net) for net in (
    "127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "fe80::/10", "ff00::/8",
))


class AddressNotAllowed(Exception):
    """A fetch (or one of its redirects) would connect outside the allowed networks."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        super().__init__(f"{host} resolves to {', '.join(addresses) or 'no address'}")


class AllowedNetworksBackend(httpcore.SyncBackend):
    """Connects only to addresses inside ``networks`` or, without any, to none in ``REFUSED_BY_DEFAULT``.

    The check happens where the socket is opened, on the very address it is opened to, so neither a
    redirect nor a DNS answer that changes between a check and the connect can reach another host.
    TLS still verifies and sends SNI for the URL's host name: httpcore passes it separately.
    """

    def __init__(self, networks: Iterable[Network]) -> None:
        self._networks = tuple(networks)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = self.allowed_address(host, port)
        return super().connect_tcp(address, port, timeout, local_address, socket_options)

    def allowed_address(self, host: str, port: int) -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if self.allows(address):
                return address
        raise AddressNotAllowed(host, addresses)

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not self._networks:
            return not any(ip in net for net in REFUSED_BY_DEFAULT)
        return any(ip in net for net in self._networks)  # an address is never in the other version's network


def _transport(networks: tuple[Network, ...]) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=tls.client_context(), trust_env=False)
    # httpx has no public hook for the network backend; its pool is the one place to put it.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=tls.client_context(),
        network_backend=AllowedNetworksBackend(networks),
    )
    return transport


class ImageFetcher:
    """Fetches remote images for backends that take only inline base64 data."""

    def __init__(self, config: Config, *, transport: httpx.BaseTransport | None = None) -> None:
        self._service = config.service
        self.max_bytes = self._service.image_max_bytes
        self._transport = transport
        self._made: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def _client(self) -> httpx.Client:
        # Made on the first fetch: its TLS context loads the CA bundle, which start-up need not wait for.
        if self._made is None:
            with self._lock:
                if self._made is None:
                    self._made = httpx.Client(
                        transport=self._transport or _transport(self._service.image_fetch_networks),
                        timeout=self._service.image_fetch_timeout, follow_redirects=True, max_redirects=3,
                        trust_env=False,
                    )
        return self._made

    def to_data_url(self, url: str, param: str) -> str:
        try:
            with turns.waiting(), self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageUnavailable(f"Image {url!r} could not be fetched: HTTP {response.status_code}.",
                                           param=param)
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise ImageUnavailable(f"Image {url!r} is larger than {self.max_bytes} bytes.", param=param)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise ImageUnavailable(f"Image {url!r} is larger than {self.max_bytes} bytes.",
                                               param=param)
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        except AddressNotAllowed as exc:
            raise ImageUnavailable(f"Image {url!r} was not fetched: {exc}, outside the networks this gateway "
                                   "fetches images from (gateway.image-fetch-networks; without it, never "
                                   "loopback, link-local, unspecified or multicast addresses).",
                                   param=param) from exc
        except httpx.HTTPError as exc:
            raise ImageUnavailable(f"Image {url!r} could not be fetched: {type(exc).__name__}.",
                                   param=param) from exc
        sniffed = next((kind for magic, kind in _IMAGE_MAGIC if bytes(data[: len(magic)]) == magic), None)
        if not content_type.startswith("image/"):
            if sniffed is None:
                raise ImageUnavailable(f"{url!r} is not an image (content type {content_type or 'unknown'}).",
                                       param=param)
            content_type = sniffed
        return f"data:{content_type};base64,{base64.b64encode(bytes(data)).decode('ascii')}"

    def close(self) -> None:
        if self._made is not None:
            self._made.close()


# -- what a data: URL's bytes are -----------------------------------------------------------------
# A data URL names its own type; a client that labels JPEG bytes image/png (or sends random bytes)
# gets a 400 here instead of an engine error later. Ollama's OpenAI layer takes only jpeg, jpg, png
# and webp data URLs (openai/openai.go, decodeImageURL); vLLM opens what PIL reads.
_DECLARED_IMAGE_TYPES = {
    "image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/gif": "gif",
    "image/webp": "webp", "image/bmp": "bmp", "image/x-bmp": "bmp", "image/x-ms-bmp": "bmp", "image/tiff": "tiff",
}
# The sizes of the BMP info headers (BITMAPCOREHEADER 12 through BITMAPV5HEADER 124): "BM" alone is
# two bytes that plenty of random data starts with.
_BMP_INFO_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
DATA_URL_IMAGE_TYPES = tuple(sorted(set(_DECLARED_IMAGE_TYPES.values())))


def image_format(data: bytes) -> str | None:
    """The image format the bytes start with (``png``, ``jpeg``, ``gif``, ``webp``, ``bmp``, ``tiff``)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM") and int.from_bytes(data[14:18], "little") in _BMP_INFO_HEADER_SIZES:
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def declared_image_format(media_type: str) -> str | None:
    """The format a data URL's media type (``image/png``, any case) promises, or None for one not checked."""
    return _DECLARED_IMAGE_TYPES.get(media_type.lower())
