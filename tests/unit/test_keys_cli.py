"""`bulwark keys token / tokens / rotate kek`: tokens shown once and stored as hashes; rotating the KEK
re-wraps every artifact's data key without re-encrypting weights, and old versions still load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulwark.artifacts import MANIFEST, ArtifactStore, ArtifactWriter
from bulwark.auth import load_credentials
from bulwark.cli.keys import keys
from bulwark.crypto import KeyRing, Signer, load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.crypto.keyset import init_keys
from bulwark.errors import BulwarkError

WEIGHTS = b"\x80\x02secret-weights" * 200


def test_keys_token_prints_once_stores_only_the_hash_and_list_shows_ids(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(keys, ["token", "payments-api", "--scope", "predict", "--scope", "explain",
                               "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    token = out.stdout.strip().splitlines()[0]
    assert token.startswith("bwk_") and len(token) > 40
    stored = (tmp_path / "tokens.json").read_text()
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0
    ident = load_credentials(tmp_path).by_token(token)
    assert ident is not None and ident.scopes == {"predict", "explain"}
    listed = runner.invoke(keys, ["tokens", "--dir", str(tmp_path), "--json"])
    rows = json.loads(listed.stdout)
    assert rows[0]["identity"] == "payments-api" and rows[0]["id"].startswith("tk-")
    assert token not in listed.output and hashlib.sha256(token.encode()).hexdigest() not in listed.output
    bad = runner.invoke(keys, ["token", "x", "--scope", "root", "--dir", str(tmp_path)])
    assert bad.exit_code != 0 and "predict" in bad.output  # the valid scopes are named


def test_keys_rotate_kek_rewraps_every_artifact_and_old_versions_still_load(tmp_path: Path) -> None:
    kd, root = tmp_path / "keys", tmp_path / "artifacts"
    init_keys(kd)
    old_kek = load_ring(RING_KEK, kd)
    store = ArtifactStore(root, verifier=load_verifier(kd), kek=old_kek,
                          signer=Signer.from_pem((kd / "signing.key").read_bytes()))
    for version, stage in [(1, "trained"), (1, "quantized"), (2, "trained")]:
        w = ArtifactWriter("fraud", version, stage, "mlp")
        w.add("model.pt", WEIGHTS + bytes([version]))
        store.publish(w)
    sealed = {p: p.read_bytes() for p in root.rglob("model.pt")}
    out = CliRunner().invoke(keys, ["rotate", "kek", "--dir", str(kd), "--store", str(root)])
    assert out.exit_code == 0, out.output
    assert "3 artifact(s) re-wrapped" in out.stdout
    new_kek = load_ring(RING_KEK, kd)
    assert new_kek.active != old_kek.active
    assert {p: p.read_bytes() for p in root.rglob("model.pt")} == sealed  # weights' ciphertext untouched
    for manifest in root.rglob(MANIFEST):
        assert json.loads(manifest.read_bytes())["data_key"]["kek_id"] == new_kek.active
    only_new = KeyRing(RING_KEK, new_kek.active, {new_kek.active: new_kek.active_key})
    reader = ArtifactStore(root, verifier=load_verifier(kd), kek=only_new)
    assert reader.open("fraud", 1, "trained").files["model.pt"] == WEIGHTS + b"\x01"
    assert reader.open("fraud", 2, "trained").files["model.pt"] == WEIGHTS + b"\x02"
    with pytest.raises(BulwarkError, match="wrong key-encryption key|has no key"):
        ArtifactStore(root, verifier=load_verifier(kd), kek=old_kek).open("fraud", 1, "quantized")
