"""Artifacts: signed, encrypted, atomic; any tampering or a wrong key is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulwark.artifacts import MANIFEST, ArtifactStore, ArtifactWriter
from bulwark.crypto import KeyRing, Signer, Verifier
from bulwark.errors import CryptoError, NotFoundError, SignatureError

WEIGHTS = b"\x80\x02weights-that-are-secret" * 100


@pytest.fixture
def keys():
    signer = Signer.generate()
    return signer, Verifier({signer.key_id: signer.public_key}), KeyRing.generate("kek")


def _publish(root: Path, keys, version: int = 1) -> ArtifactStore:
    signer, verifier, kek = keys
    store = ArtifactStore(root, verifier=verifier, kek=kek, signer=signer)
    w = ArtifactWriter("fraud", version, "trained", "mlp", card={"metrics": {"accuracy": 0.9}})
    w.add("model.pt", WEIGHTS)
    w.add_json("metrics.json", {"accuracy": 0.9})
    store.publish(w)
    return store


def _flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def test_artifact_round_trip_decrypts_in_memory_and_weights_are_sealed_on_disk(tmp_path: Path, keys) -> None:
    store = _publish(tmp_path, keys)
    folder = store.path("fraud", 1, "trained")
    assert WEIGHTS[:20] not in (folder / "model.pt").read_bytes()
    art = store.open("fraud", 1, "trained")
    assert art.files["model.pt"] == WEIGHTS and art.json("metrics.json") == {"accuracy": 0.9}
    assert len(art.digest) == 64 and art.card["metrics"]["accuracy"] == 0.9


@pytest.mark.parametrize(("name", "index"), [("model.pt", 0), ("model.pt", 500), ("model.pt", -1),
                                             ("metrics.json", 3), (MANIFEST, 10), ("manifest.sig", 30)])
def test_one_changed_byte_anywhere_fails_verification(tmp_path: Path, keys, name: str, index: int) -> None:
    store = _publish(tmp_path, keys)
    _flip(store.path("fraud", 1, "trained") / name, index)
    with pytest.raises(SignatureError):
        store.open("fraud", 1, "trained")


def test_untrusted_signer_and_wrong_kek_are_refused_with_clear_errors(tmp_path: Path, keys) -> None:
    _publish(tmp_path, keys)
    other = Signer.generate()
    with pytest.raises(SignatureError, match="untrusted"):
        ArtifactStore(tmp_path, verifier=Verifier({other.key_id: other.public_key}), kek=keys[2]).open("fraud", 1, "trained")
    wrong = KeyRing(keys[2].name, keys[2].active, {keys[2].active: b"\x01" * 32})
    with pytest.raises(CryptoError, match="wrong key-encryption key"):
        ArtifactStore(tmp_path, verifier=keys[1], kek=wrong).open("fraud", 1, "trained")
    with pytest.raises(NotFoundError):
        ArtifactStore(tmp_path, verifier=keys[1], kek=keys[2]).open("fraud", 2, "trained")


def test_kek_rotation_rewraps_data_keys_without_touching_weights(tmp_path: Path, keys) -> None:
    store = _publish(tmp_path, keys)
    folder = store.path("fraud", 1, "trained")
    sealed_before = (folder / "model.pt").read_bytes()
    rotated = keys[2].rotated()
    store.rewrap("fraud", 1, "trained", rotated, keys[0])
    assert (folder / "model.pt").read_bytes() == sealed_before
    assert json.loads((folder / MANIFEST).read_bytes())["data_key"]["kek_id"] == rotated.active
    only_new = KeyRing("kek", rotated.active, {rotated.active: rotated.active_key})
    art = ArtifactStore(tmp_path, verifier=keys[1], kek=only_new).open("fraud", 1, "trained")
    assert art.files["model.pt"] == WEIGHTS


def test_publish_is_atomic_and_idempotent(tmp_path: Path, keys) -> None:
    store = _publish(tmp_path, keys)
    first = store.verify("fraud", 1, "trained")
    _publish(tmp_path, keys)  # a re-run after a crash keeps the published artifact
    assert store.verify("fraud", 1, "trained") == first
    (tmp_path / "fraud" / "2" / ".tmp-trained-dead").mkdir(parents=True)
    assert store.clean_partial() == 1 and store.versions("fraud") == [1]
