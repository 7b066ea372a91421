"""Crypto: key rings, AES-GCM with key ids, keyed tokens, Ed25519 signatures (all from `cryptography`)."""

from bulwark.crypto.aead import FieldCipher, is_sealed, open_bytes, seal_bytes
from bulwark.crypto.keys import RING_DLQ, RING_FIELD, RING_KEK, RING_PSEUDONYM, KeyMaterialError, KeyRing, load_ring
from bulwark.crypto.signing import Signer, Verifier, load_signer, load_verifier
from bulwark.crypto.tokens import Pseudonymizer

__all__ = [
    "RING_DLQ", "RING_FIELD", "RING_KEK", "RING_PSEUDONYM", "FieldCipher", "KeyMaterialError", "KeyRing",
    "Pseudonymizer", "Signer", "Verifier", "is_sealed", "load_ring", "load_signer", "load_verifier",
    "open_bytes", "seal_bytes",
]
