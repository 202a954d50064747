"""The key-derivation helper shared by the operator, local mode and the session pod."""

from __future__ import annotations

import pytest

from whatsapp_common.keys import KeyRing, NamedKey, derive, hkdf, new_secret, parse_ring


def test_hkdf_is_rfc_5869s() -> None:
    """RFC 5869, appendix A.1 (SHA-256, basic test case)."""
    okm = hkdf(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_each_purpose_location_and_master_gives_its_own_key() -> None:
    master, other = b"m" * 32, b"n" * 32
    keys = {
        derive(master, "backup", "13"),
        derive(master, "backup", "1"),
        derive(master, "backup", "130"),
        derive(master, "pod-token", "13"),
        derive(other, "backup", "13"),
    }
    assert len(keys) == 5 and all(len(k) == 32 for k in keys)
    assert derive(master, "backup", "13") == derive(master, "backup", "13")
    with pytest.raises(ValueError, match="unknown key purpose"):
        derive(master, "webhook", "13")


def test_a_ring_round_trips_and_its_errors_never_show_a_secret() -> None:
    ring = parse_ring(f"new:{new_secret()},\nold:{new_secret()}")
    assert ring.names == ["new", "old"] and ring.current.name == "new"
    assert parse_ring(ring.to_text()) == ring
    assert repr(ring.current) == "NamedKey(name='new')"  # the secret is never printed
    derived = ring.derive("backup", "13")
    assert derived.names == ring.names and derived.current.secret != ring.current.secret
    for text, says in [
        ("", "empty"),
        ("no-colon", "entry 1 is not name:base64secret"),
        ("k:not base64!", "'k' is not base64"),
        ("k:c2hvcnQtc2VjcmV0", "has 12 bytes"),
        (f"k:{new_secret()},k:{new_secret()}", "unique"),
    ]:
        with pytest.raises(ValueError, match=says) as error:
            parse_ring(text)
        assert "c2hvcnQ" not in str(error.value)
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing(())
    assert NamedKey("a", b"x" * 32) != NamedKey("a", b"y" * 32)
