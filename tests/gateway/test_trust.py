"""The callback trust policy: constant-time token check, IP allowlist, trusted proxies."""

from __future__ import annotations

import pytest

from pesa import ConfigurationError
from pesa.gateway._trust import (
    SAFARICOM_CALLBACK_IPS,
    CallbackTrust,
    parse_networks,
    resolve_client_ip,
    tokens_match,
)

SAFARICOM = "196.201.214.200"
STRANGER = "203.0.113.9"
PROXY = "10.0.0.5"


class TestTokensMatch:
    def test_equal_tokens_match(self) -> None:
        assert tokens_match("s3cret-token", "s3cret-token")

    @pytest.mark.parametrize("given", ["", "s3cret", "s3cret-token2", "S3CRET-TOKEN", "x" * 12])
    def test_any_other_string_does_not_match(self, given: str) -> None:
        assert not tokens_match(given, "s3cret-token")

    def test_non_ascii_input_is_compared_not_raised(self) -> None:
        """compare_digest refuses non-ASCII str; encoding first keeps a guess from raising."""
        assert not tokens_match("tökén", "s3cret-token")


class TestParseNetworks:
    def test_addresses_and_cidrs_are_parsed(self) -> None:
        nets = parse_networks(["1.2.3.4", " 10.0.0.0/8 ", "::1", ""], setting="trusted_proxies")
        assert [str(n) for n in nets] == ["1.2.3.4/32", "10.0.0.0/8", "::1/128"]

    def test_garbage_names_the_setting(self) -> None:
        with pytest.raises(ConfigurationError, match="PESA_TRUSTED_PROXIES"):
            parse_networks(["10.0.0.300"], setting="trusted_proxies")


class TestResolveClientIp:
    def test_without_trusted_proxies_the_peer_is_the_client_and_headers_ignored(self) -> None:
        assert resolve_client_ip(STRANGER, [SAFARICOM], ()) == STRANGER

    def test_untrusted_peer_cannot_spoof_with_forwarded_for(self) -> None:
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        assert resolve_client_ip(STRANGER, [SAFARICOM], proxies) == STRANGER

    def test_trusted_proxy_forwards_the_hop_it_saw(self) -> None:
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        assert resolve_client_ip(PROXY, [SAFARICOM], proxies) == SAFARICOM

    def test_client_written_entries_left_of_the_real_hop_are_ignored(self) -> None:
        """The attacker prepends a Safaricom address; the proxy appends the real one."""
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        header = f"{SAFARICOM}, {STRANGER}"
        assert resolve_client_ip(PROXY, [header], proxies) == STRANGER

    def test_chains_of_trusted_proxies_are_skipped(self) -> None:
        proxies = parse_networks(["10.0.0.0/8"], setting="trusted_proxies")
        headers = [f"{SAFARICOM}, 10.1.1.1", "10.2.2.2"]
        assert resolve_client_ip(PROXY, headers, proxies) == SAFARICOM

    def test_trusted_proxy_without_header_is_itself_the_client(self) -> None:
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        assert resolve_client_ip(PROXY, [], proxies) == PROXY

    def test_all_hops_trusted_gives_the_leftmost(self) -> None:
        proxies = parse_networks(["10.0.0.0/8"], setting="trusted_proxies")
        assert resolve_client_ip(PROXY, ["10.9.9.9, 10.8.8.8"], proxies) == "10.9.9.9"

    def test_garbage_hop_from_trusted_proxy_is_unknown(self) -> None:
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        assert resolve_client_ip(PROXY, ["not-an-ip"], proxies) is None

    @pytest.mark.parametrize(
        ("hop", "expected"),
        [("196.201.214.200:4431", SAFARICOM), ("[2001:db8::1]:443", "2001:db8::1")],
    )
    def test_hops_with_ports_are_understood(self, hop: str, expected: str) -> None:
        proxies = parse_networks([PROXY], setting="trusted_proxies")
        assert resolve_client_ip(PROXY, [hop], proxies) == expected

    def test_ipv4_mapped_ipv6_peer_is_read_as_ipv4(self) -> None:
        assert resolve_client_ip(f"::ffff:{SAFARICOM}", [], ()) == SAFARICOM

    def test_unknown_peer_is_none(self) -> None:
        assert resolve_client_ip(None, [], ()) is None
        assert resolve_client_ip("testclient", [], ()) is None


class TestCallbackTrust:
    def test_default_allowlist_is_the_reference_list(self) -> None:
        trust = CallbackTrust.build("t", allowlist_mode="enforce")
        assert len(trust.allowed_networks) == len(SAFARICOM_CALLBACK_IPS) == 14
        for ip in SAFARICOM_CALLBACK_IPS:
            assert trust.check_source(ip, []).allowed

    def test_off_accepts_anyone(self) -> None:
        verdict = CallbackTrust.build("t").check_source(STRANGER, [])
        assert verdict.allowed
        assert verdict.client_ip == STRANGER

    def test_log_accepts_strangers_but_says_so(self) -> None:
        verdict = CallbackTrust.build("t", allowlist_mode="log").check_source(STRANGER, [])
        assert verdict.allowed
        assert not verdict.listed
        assert verdict.reason == "source address not listed"

    def test_enforce_refuses_strangers(self) -> None:
        verdict = CallbackTrust.build("t", allowlist_mode="enforce").check_source(STRANGER, [])
        assert not verdict.allowed

    def test_enforce_refuses_unknown_source(self) -> None:
        verdict = CallbackTrust.build("t", allowlist_mode="enforce").check_source(None, [])
        assert not verdict.allowed
        assert verdict.reason == "source address unknown"

    def test_enforce_refuses_spoofed_forwarded_for_from_untrusted_peer(self) -> None:
        trust = CallbackTrust.build("t", allowlist_mode="enforce")
        assert not trust.check_source(STRANGER, [SAFARICOM]).allowed

    def test_enforce_accepts_safaricom_behind_trusted_proxy(self) -> None:
        trust = CallbackTrust.build("t", allowlist_mode="enforce", trusted_proxies=[PROXY])
        verdict = trust.check_source(PROXY, [SAFARICOM])
        assert verdict.allowed
        assert verdict.client_ip == SAFARICOM

    def test_custom_allowlist_with_cidr(self) -> None:
        trust = CallbackTrust.build("t", allowlist_mode="enforce", allowed_ips=["127.0.0.0/8"])
        assert trust.check_source("127.0.0.1", []).allowed
        assert not trust.check_source(SAFARICOM, []).allowed

    def test_ipv6_client_against_ipv4_list_is_refused_not_raised(self) -> None:
        trust = CallbackTrust.build("t", allowlist_mode="enforce")
        assert not trust.check_source("2001:db8::1", []).allowed

    def test_empty_token_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="PESA_CALLBACK_TOKEN"):
            CallbackTrust.build("")

    def test_enforce_with_empty_list_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="PESA_CALLBACK_ALLOWED_IPS"):
            CallbackTrust.build("t", allowlist_mode="enforce", allowed_ips=[])

    def test_check_token(self) -> None:
        trust = CallbackTrust.build("right")
        assert trust.check_token("right")
        assert not trust.check_token("wrong")
