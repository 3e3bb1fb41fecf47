"""Whether an inbound Daraja callback may be trusted: path token, source IP, proxy headers.

Daraja signs nothing (REFERENCE §6.3, §11), so a receiver (the gateway, the Django app)
trusts a callback only when:

1. the secret token in its path matches, compared in constant time (wrong token: 404 and
   nothing stored, so the route does not even exist for a guesser);
2. optionally, its source address is on Safaricom's published list. That list is community
   knowledge, not an official page (REFERENCE §11 marks it unverified), so it is configurable
   and the policy has a ``log`` mode that records strangers without refusing them;
3. the id it carries is one we issued and the amount is what we asked for (checked by the
   ledger, not here).

:func:`callback_reply` is the answer Daraja gets once the ledger has stored the callback.

Proxy headers are ignored unless the connecting peer is a configured trusted proxy: anyone
can send ``X-Forwarded-For``. This module is pure (no I/O) so that every rule has a unit test.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pesa._constants import DEFAULT_CALLBACK_ALLOWED_IPS
from pesa._exceptions import ConfigurationError

__all__ = [
    "SAFARICOM_CALLBACK_IPS",
    "AllowlistMode",
    "CallbackTrust",
    "SourceVerdict",
    "callback_reply",
    "parse_networks",
    "resolve_client_ip",
    "tokens_match",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowlistMode = Literal["off", "log", "enforce"]

# REFERENCE §11; unverified against an official source, hence configurable.
SAFARICOM_CALLBACK_IPS: Final[tuple[str, ...]] = DEFAULT_CALLBACK_ALLOWED_IPS

# Stored and committed: "unverified" waits for the reconciler's query, "ignored" (a result for
# a payment that is already final in another way) changes nothing, but Daraja delivered it.
_ACCEPTED_OUTCOMES: Final = frozenset({"applied", "unverified", "duplicate", "ignored"})


def callback_reply(outcome: str, detail: str = "") -> tuple[int, dict[str, object]]:
    """The HTTP status and body Daraja gets for a callback stored with ``outcome``.

    Daraja reads ``{"ResultCode", "ResultDesc"}`` (REFERENCE §6.3); ``0`` means accepted.
    ``applied``, ``unverified``, ``duplicate`` and ``ignored`` are accepted (200); a
    CheckoutRequestID no payment has is a 404, anything else we cannot use a 400. Answer
    only after the callback is committed.
    """
    if outcome in _ACCEPTED_OUTCOMES:
        return 200, {"ResultCode": 0, "ResultDesc": "Accepted"}
    status = 404 if outcome == "unknown_payment" else 400
    return status, {"ResultCode": 1, "ResultDesc": f"Rejected: {detail}"}


def tokens_match(given: str, expected: str) -> bool:
    """Compare a presented secret with the expected one in constant time.

    ``hmac.compare_digest`` on bytes: the time taken does not depend on how many leading
    characters match, so a guesser learns nothing from response times.
    """
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_networks(values: Iterable[str], *, setting: str) -> tuple[IPNetwork, ...]:
    """Parse addresses or CIDR blocks (``196.201.214.200``, ``10.0.0.0/8``, ``::1``).

    Raises:
        ConfigurationError: an entry is not an address or network; names ``PESA_<SETTING>``.
    """
    networks: list[IPNetwork] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as err:
            raise ConfigurationError(
                f"{setting}: {value!r} is not an IP address or CIDR network "
                f"(set PESA_{setting.upper()} to a comma-separated list)"
            ) from err
    return tuple(networks)


# Cached: every callback parses its peer's address, and the peers are few (Daraja's
# addresses, a proxy). Bounded, so a sender varying X-Forwarded-For only churns it.
@functools.lru_cache(maxsize=1024)
def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    # X-Forwarded-For entries sometimes carry a port ("1.2.3.4:5678") or IPv6 brackets.
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_any(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[IPNetwork]
) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def resolve_client_ip(
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[IPNetwork],
) -> str | None:
    """The address of the party that really sent a request.

    Proxy headers count only when the TCP peer is a trusted proxy. Then ``X-Forwarded-For``
    is read from the right (the hop the nearest proxy saw) towards the left, skipping hops
    that are themselves trusted proxies; the first untrusted hop is the client. Entries to
    its left were written by the client and are never believed.

    Args:
        peer: the TCP peer address (``request.client.host``), ``None`` if unknown.
        forwarded_for: every ``X-Forwarded-For`` header value, in the order received.
        trusted_proxies: networks whose proxy headers are believed.

    Returns:
        The client address as text, or ``None`` when it cannot be determined (no peer, or a
        trusted proxy forwarded a hop that is not an IP address).
    """
    if peer is None:
        return None
    peer_ip = _parse_ip(peer)
    if peer_ip is None:
        return None
    if not trusted_proxies or not _in_any(peer_ip, trusted_proxies):
        return str(peer_ip)
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        # A trusted proxy that forwarded nothing: the proxy itself is the sender.
        return str(peer_ip)
    for hop in reversed(hops):
        hop_ip = _parse_ip(hop)
        if hop_ip is None:
            return None
        if not _in_any(hop_ip, trusted_proxies):
            return str(hop_ip)
    # Every hop is a trusted proxy: the leftmost one originated the request.
    return str(_parse_ip(hops[0]))


@dataclass(frozen=True, slots=True)
class SourceVerdict:
    """Whether a callback's source address passes the allowlist.

    Attributes:
        client_ip: the resolved client address, ``None`` if it could not be determined.
        allowed: ``False`` only when the mode is ``enforce`` and the address is not listed.
        listed: whether the address is on the allowlist.
        reason: a short explanation for the log line.
    """

    client_ip: str | None
    allowed: bool
    listed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CallbackTrust:
    """The callback trust policy of one gateway.

    Attributes:
        token: the secret path token of ``/callbacks/{token}/stk``.
        allowlist_mode: ``off`` (no source check), ``log`` (log callbacks from unlisted
            addresses but accept them) or ``enforce`` (refuse them with 403).
        allowed_networks: addresses and networks Daraja calls back from.
        trusted_proxies: peers whose ``X-Forwarded-For`` header is believed.

    Example:
        >>> trust = CallbackTrust.build("s3cret", allowlist_mode="enforce")
        >>> trust.check_token("s3cret")
        True
        >>> trust.check_source("196.201.214.200", []).allowed
        True
    """

    token: str
    allowlist_mode: AllowlistMode = "off"
    allowed_networks: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(
        cls,
        token: str,
        *,
        allowlist_mode: AllowlistMode = "off",
        allowed_ips: Iterable[str] = SAFARICOM_CALLBACK_IPS,
        trusted_proxies: Iterable[str] = (),
    ) -> CallbackTrust:
        """Build a policy from the textual settings, validating every entry.

        Raises:
            ConfigurationError: an empty token, a malformed address, or ``enforce`` with an
                empty allowlist (which would refuse every callback).
        """
        if not token:
            raise ConfigurationError("callback_token must not be empty (PESA_CALLBACK_TOKEN)")
        allowed = parse_networks(allowed_ips, setting="callback_allowed_ips")
        if allowlist_mode == "enforce" and not allowed:
            raise ConfigurationError(
                "callback_allowed_ips is empty but callback_allowlist is 'enforce': every "
                "callback would be refused (set PESA_CALLBACK_ALLOWED_IPS)"
            )
        return cls(
            token=token,
            allowlist_mode=allowlist_mode,
            allowed_networks=allowed,
            trusted_proxies=parse_networks(trusted_proxies, setting="trusted_proxies"),
        )

    def check_token(self, given: str) -> bool:
        """Whether ``given`` is this gateway's callback token (constant time)."""
        return tokens_match(given, self.token)

    def check_source(self, peer: str | None, forwarded_for: Sequence[str]) -> SourceVerdict:
        """Resolve the real client address and judge it against the allowlist."""
        client_ip = resolve_client_ip(peer, forwarded_for, self.trusted_proxies)
        if self.allowlist_mode == "off":
            return SourceVerdict(client_ip, allowed=True, listed=False, reason="allowlist off")
        address = _parse_ip(client_ip) if client_ip is not None else None
        listed = address is not None and _in_any(address, self.allowed_networks)
        if listed:
            return SourceVerdict(client_ip, allowed=True, listed=True, reason="listed")
        reason = "source address unknown" if address is None else "source address not listed"
        return SourceVerdict(
            client_ip,
            allowed=self.allowlist_mode != "enforce",
            listed=False,
            reason=reason,
        )
