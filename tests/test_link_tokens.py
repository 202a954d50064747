"""Signed link tokens (whatsapp_common/link_tokens.py): one location, a lifetime, the key
ring's rotation, and every change to a token refused."""

from __future__ import annotations

import base64
import json
import string

import pytest

from whatsapp_common.keys import KeyRing, NamedKey
from whatsapp_common.link_tokens import InvalidLinkToken, LinkGrant, issue, verify

OLD = NamedKey("2026-06", b"o" * 32)
NEW = NamedKey("2026-12", b"n" * 32)
NOW = 1_800_000_000
GRANT = LinkGrant("13", "Beauty Shop Palermo ñ", NOW + 900)


def refused(ring: KeyRing, token: str, now: float = NOW) -> str:
    with pytest.raises(InvalidLinkToken) as caught:
        verify(ring, token, now)
    return caught.value.reason


def test_a_token_carries_its_grant_until_it_expires() -> None:
    ring = KeyRing((OLD,))
    token = issue(ring, GRANT)
    assert verify(ring, token, NOW) == GRANT
    assert verify(ring, token, GRANT.expires_at - 0.001) == GRANT
    assert refused(ring, token, GRANT.expires_at) == "expired"
    assert len(token) < 300 and token.isascii() and "/" not in token


def test_rotation_new_key_signs_old_tokens_still_open() -> None:
    old_token = issue(KeyRing((OLD,)), GRANT)
    rotated = KeyRing((NEW, OLD))
    assert verify(rotated, old_token, NOW) == GRANT
    new_token = issue(rotated, GRANT)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["k"] == NEW.name
    assert refused(KeyRing((OLD,)), new_token) == "forged"  # a key the verifier lacks
    assert refused(KeyRing((NEW,)), old_token) == "forged"  # the old key removed


def test_every_change_is_refused() -> None:
    ring = KeyRing((OLD,))
    token = issue(ring, GRANT)
    head, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))

    def reencoded(**changes: object) -> str:
        raw = json.dumps({**payload, **changes}).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac

    assert refused(ring, reencoded(l="14")) == "forged"  # another location
    assert refused(ring, reencoded(e=NOW + 10**6)) == "forged"  # a longer life
    assert refused(ring, reencoded(n="Other")) == "forged"
    assert refused(ring, reencoded(k="2026-12")) == "forged"
    flipped = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    assert refused(ring, f"{head}.{flipped}") == "forged"
    assert refused(ring, f"{head}.{mac[:-1]}") in ("forged", "malformed")
    # The last character's spare bits: another text of the same bytes is not the token.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    spare = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(spare + "=") == base64.urlsafe_b64decode(mac + "=")
    assert refused(ring, f"{head}.{spare}") == "malformed"
    # The same key under another name signs nothing: the key names the location's key.
    assert refused(KeyRing((NamedKey("other", OLD.secret),)), token) == "forged"


@pytest.mark.parametrize(
    "token",
    ["", "abc", ".", "x.y", "abc.!!!", f"{'a' * 2000}.b", "eyJ2IjogMn0.AAAA", "w6k.AAAA"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refused(KeyRing((OLD,)), token) in ("malformed", "forged")


def test_a_location_key_opens_no_other_location() -> None:
    ring = KeyRing((OLD,))
    one = issue(ring, LinkGrant("13", "A", NOW + 60)).split(".")[1]
    other = issue(ring, LinkGrant("14", "A", NOW + 60)).split(".")[1]
    assert one != other
