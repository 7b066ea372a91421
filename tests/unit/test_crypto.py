"""Crypto round trips, rotation, and tamper detection (a flipped bit never decrypts or verifies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulwark.crypto import FieldCipher, KeyMaterialError, KeyRing, Pseudonymizer, Signer, Verifier, load_ring
from bulwark.crypto.aead import parse_token
from bulwark.crypto.keys import b64d, b64e, ring_env_var
from bulwark.crypto.keyset import init_keys, list_keys, rotate
from bulwark.errors import CryptoError, SignatureError


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_field_cipher_round_trip_and_context_binding() -> None:
    c = FieldCipher(KeyRing.generate("field"))
    token = c.encrypt("张伟 +86 138 0013 8000".encode(), b"payment.transaction|phone")
    assert "138" not in token
    assert c.decrypt(token, b"payment.transaction|phone").decode() == "张伟 +86 138 0013 8000"
    with pytest.raises(CryptoError):
        c.decrypt(token, b"payment.transaction|email")  # moved to another field: refused


@pytest.mark.parametrize("index", [0, 5, 12, 20, -1])
def test_flipped_bit_fails_to_decrypt(index: int) -> None:
    c = FieldCipher(KeyRing.generate("field"))
    token = c.encrypt(b"secret value")
    kid, sealed = parse_token(token)
    tampered = f"enc:v1:{kid}:{b64e(_flip(sealed, index))}"
    with pytest.raises(CryptoError, match="authentication"):
        c.decrypt(tampered)


def test_rotation_keeps_old_data_readable_and_new_data_on_new_key() -> None:
    ring = KeyRing.generate("field")
    old = FieldCipher(ring).encrypt(b"before")
    rotated = ring.rotated()
    c = FieldCipher(rotated)
    assert c.decrypt(old) == b"before"
    assert parse_token(c.encrypt(b"after"))[0] == rotated.active != ring.active


def test_wrong_ring_cannot_decrypt() -> None:
    token = FieldCipher(KeyRing.generate("field")).encrypt(b"x")
    other = KeyRing("field", parse_token(token)[0], {parse_token(token)[0]: b"\x00" * 32})
    with pytest.raises(CryptoError):
        FieldCipher(other).decrypt(token)


def test_pseudonym_tokens_are_stable_keyed_and_domain_separated() -> None:
    ring = KeyRing.generate("pseudonym")
    p = Pseudonymizer(ring)
    assert p.token("alice@example.com", domain="email") == p.token("alice@example.com", domain="email")
    assert p.token("alice@example.com", domain="email") != p.token("alice@example.com", domain="phone")
    assert p.token("alice@example.com") != Pseudonymizer(KeyRing.generate("pseudonym")).token("alice@example.com")
    assert "alice" not in p.token("alice@example.com")
    assert 0 <= p.bucket("C1", 64) < 64


@pytest.mark.parametrize("chars", [1, 8, 20, 24, 25, 52])
def test_pseudonym_tokens_are_the_documented_construction(chars: int) -> None:
    # Tokens are joins across releases: they must stay the lowercased base32 of HMAC-SHA256(key, domain 0x1f
    # value), cut to `chars`, however the digest is computed.
    import base64
    import hashlib
    import hmac

    ring = KeyRing.generate("pseudonym")
    p = Pseudonymizer(ring, digest_chars=chars, cache_size=2)
    for value in ("alice@example.com", "+86 138 0013 8000", "张伟", "", "alice@example.com"):  # evicted, then again
        mac = hmac.new(ring.active_key, f"email\x1f{value}".encode(), hashlib.sha256).digest()
        expected = f"tok_{ring.active}_{base64.b32encode(mac).decode().lower()[:chars]}"
        assert p.token(value, domain="email") == expected
        assert p.bucket(value, 97, domain="email") == int.from_bytes(mac[:8], "big") % 97


def test_signature_verifies_and_any_change_is_refused() -> None:
    signer = Signer.generate()
    verifier = Verifier({signer.key_id: signer.public_key})
    data = b'{"artifact": "sha256:abc"}'
    sig = signer.sign(data)
    verifier.verify(data, sig, signer.key_id)
    with pytest.raises(SignatureError, match="does not match"):
        verifier.verify(_flip(data, 3), sig, signer.key_id)
    with pytest.raises(SignatureError):
        verifier.verify(data, b64e(_flip(b64d(sig), 10)), signer.key_id)
    with pytest.raises(SignatureError, match="untrusted"):
        verifier.verify(data, sig, "ed-unknown")


def test_key_files_init_list_rotate(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    written = init_keys(keys)
    assert {p.name for p in written} == {"field.json", "pseudonym.json", "dlq.json", "kek.json", "signing.key",
                                         "verify.json"}
    assert (keys / "field.json").stat().st_mode & 0o077 == 0  # owner only
    assert init_keys(keys) == []  # idempotent: existing keys are kept
    old_signer_id = next(k.key_id for k in list_keys(keys) if k.ring == "signing")
    new_field = rotate(keys, "field")
    new_signer = rotate(keys, "signing")
    listed = {(k.ring, k.key_id): k.active for k in list_keys(keys)}
    assert listed[("field", new_field)] and listed[("signing", new_signer)]
    assert listed[("signing", old_signer_id)] is False  # old public key kept: old artifacts still verify
    assert all("=" not in k.key_id for k in list_keys(keys))


def test_ring_from_environment_wins_and_bad_ring_says_how_to_fix(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.generate("dlq")
    monkeypatch.setenv(ring_env_var("dlq"), ring.to_json())
    assert load_ring("dlq", tmp_path).active == ring.active
    monkeypatch.setenv(ring_env_var("dlq"), json.dumps({"active": "a", "keys": {"a": b64e(b"short")}}))
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        load_ring("dlq", tmp_path)
    monkeypatch.delenv(ring_env_var("dlq"))
    with pytest.raises(KeyMaterialError, match="bulwark keys init"):
        load_ring("dlq", tmp_path)


def test_key_ring_repr_never_shows_key_material() -> None:
    ring = KeyRing.generate("field")
    assert b64e(ring.active_key) not in repr(ring)
    assert "Signer(key_id=" in repr(Signer.generate())
