"""Which webhook URLs we send to (no server-side request forgery).

In production a URL must be ``https`` and every address its host resolves to must be public:
no loopback, private, link-local (cloud metadata), multicast or reserved address. The check
runs when an endpoint is saved and again as every connection is made, because DNS can change:
the delivery client connects through ``PublicOnlyBackend``, which resolves the host once,
checks the answer and connects to the address it checked (a second lookup could answer
differently: DNS rebinding). ``WEBHOOK_ALLOW_PRIVATE_URLS`` (true in local and test settings)
lets development point at ``http://localhost``."""

import ipaddress
import socket
from urllib.parse import urlsplit

import httpcore
from django.conf import settings

from core.errors import InvalidInput


class UrlNotAllowed(InvalidInput):
    code = "url_not_allowed"
    default_detail = "Webhook URLs must be https and resolve to public addresses."


def _field(message: str) -> dict:
    return {"url": [{"code": "url_not_allowed", "message": message}]}


def url_check(url: str, *, resolve: bool = True) -> None:
    """Raise UrlNotAllowed unless we may send to ``url``."""
    parts = urlsplit(url)
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme not in schemes or not parts.hostname:
        message = "Use an https:// URL." if not allow_private else "Use an http(s):// URL."
        raise UrlNotAllowed(message, fields=_field(message))
    if parts.username or parts.password:
        message = "Credentials in the URL are not allowed; use the signature to authenticate."
        raise UrlNotAllowed(message, fields=_field(message))
    if allow_private or not resolve:
        return
    public_addresses(parts.hostname, parts.port or 443)


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to; raises UrlNotAllowed if it does not resolve or if
    any of them is not public."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        message = f"The host {host!r} does not resolve."
        raise UrlNotAllowed(message, fields=_field(message)) from None
    addresses = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not _is_public(address):
            message = f"The host {host!r} resolves to a non-public address ({address})."
            raise UrlNotAllowed(message, fields=_field(message))
        addresses.append(sockaddr[0])
    return addresses


# IPv6 prefixes that carry an IPv4 address Python counts as global whatever it carries:
# NAT64 (RFC 6052) and 6to4 (RFC 3056) can route to the private IPv4 address inside.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inside = address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            inside = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inside is not None and not inside.is_global:
            return False
    return True


class PublicOnlyBackend(httpcore.SyncBackend):
    """Opens the delivery client's connections: unless WEBHOOK_ALLOW_PRIVATE_URLS, only to an
    address checked in the same lookup. TLS still verifies the certificate for the URL's host
    name (the client passes it on), so connecting by address changes nothing else."""

    def connect_tcp(self, host: str, port: int, *args, **kwargs) -> httpcore.NetworkStream:
        if settings.WEBHOOK_ALLOW_PRIVATE_URLS:
            return super().connect_tcp(host, port, *args, **kwargs)
        failure: httpcore.ConnectError | None = None
        for address in public_addresses(host, port):
            try:
                return super().connect_tcp(address, port, *args, **kwargs)
            except httpcore.ConnectError as exc:  # the next address may answer
                failure = exc
        raise failure or httpcore.ConnectError(f"No address to connect to for {host!r}.")
