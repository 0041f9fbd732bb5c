"""Who a client is, for every per-client limit (the API's rates and the admin's failed logins)."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest
from rest_framework import throttling

# One host or home network is usually given a whole IPv6 /64 and can pick any address in it.
IPV6_CLIENT_PREFIX = 64


def _forwarded_address(request: HttpRequest) -> str:
    """Return the address of whoever connected to the first of DIGIT_PROXIES trusted proxies.

    Each proxy appends the address it received the connection from to X-Forwarded-For, so with N
    proxies the client is the N-th entry from the right; anything further left was written by the
    client itself. Without proxies the header is ignored and the connection's own address is used.
    """
    proxies = settings.DIGIT_PROXIES
    forwarded_for = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies == 0 or not forwarded_for:
        return request.META.get("REMOTE_ADDR", "")
    addresses = forwarded_for.split(",")
    return addresses[-min(proxies, len(addresses))].strip()


def client_address(request: HttpRequest) -> str:
    """Return the address a client is counted by: an IPv4 address as is, an IPv6 address's /64.

    The /64 is given as its first address ("2001:db8:1:2::"), a valid IP address, so it can be stored
    where an address is expected (django-axes keeps it in a GenericIPAddressField). An IPv4 address
    written as IPv6 (::ffff:192.0.2.1) counts as the IPv4 address. A value that is no address at all
    (a misconfigured proxy, a Unix socket) is returned as it is.
    """
    raw = _forwarded_address(request)
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    host_bits = 128 - IPV6_CLIENT_PREFIX
    return str(ipaddress.IPv6Address(int(address) >> host_bits << host_bits))


class ClientRateThrottle(throttling.ScopedRateThrottle):
    """DRF's scoped throttle, counting per client_address(), and every refusal says when to come back."""

    # Set by DRF from the scope's rate; declared here for the type checker.
    num_requests: int
    duration: int

    def get_ident(self, request) -> str:
        """Return the key a client's requests are counted under: its client_address()."""
        return client_address(request)

    def wait(self) -> float:
        """Return the seconds until the client may send another request, at least one."""
        # DRF gives no wait once a client's history holds more than the limit, which happens when
        # workers record requests concurrently; the limit's oldest counted request still expires.
        return max(1.0, self.history[self.num_requests - 1] + self.duration - self.now)
