"""Weights at rest: a copy of the artifact store and of Triton's model repository, taken from a real
trained and deployed version, yields no loadable model without the key-encryption key."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path

import pytest
import torch

from bulwark.artifacts import ArtifactStore, open_folder
from bulwark.crypto import KeyRing, load_ring, load_verifier
from bulwark.crypto.keys import RING_KEK
from bulwark.errors import BulwarkError, CryptoError
from bulwark.testing.stack import TestStack
from tests.integration.helpers import deploy, train_version

pytestmark = pytest.mark.integration


def test_copied_store_and_model_repository_load_no_model_without_the_key(stack: TestStack, tmp_path: Path) -> None:
    model = "theft-" + uuid.uuid4().hex[:6]
    settings = stack.settings(triton=True, redis_prefix="wr" + uuid.uuid4().hex[:8], home=tmp_path / "home",
                              **stack.topics(partitions=1))
    outcome = train_version(stack, settings, model=model, events=1500, max_epochs=5)
    deploy(stack, settings, model, [outcome.version], live=outcome.version)
    verifier = load_verifier(stack.keys_dir)
    plain = ArtifactStore(settings.artifacts_path, verifier=verifier,
                          kek=load_ring(RING_KEK, stack.keys_dir)).open(model, outcome.version, "trained")
    weights = plain.files["model.pt"]

    # What an insider copies: the whole artifact store and the version's folder in Triton's repository.
    stolen = tmp_path / "stolen"
    shutil.copytree(settings.artifacts_path / model, stolen / "artifacts" / model)
    shutil.copytree(stack.model_repository / model, stolen / "repository" / model)
    files = [p for p in stolen.rglob("*") if p.is_file()]
    assert any(p.name == "model.pt" for p in files) and len({p.parent.name for p in files}) >= 2
    # No file holds the plaintext weights, nor any 64-byte run of them.
    probes = [weights[i:i + 64] for i in range(0, len(weights) - 64, max(len(weights) // 50, 64))]
    for path in files:
        data = path.read_bytes()
        assert not any(p in data for p in probes), f"{path} holds plaintext weights"
    for sealed in (p for p in files if p.name == "model.pt"):
        with pytest.raises(Exception):
            torch.jit.load(io.BytesIO(sealed.read_bytes()))
    # Without the ring: refused, saying what is needed; with a guessed ring: the unwrap fails, clearly.
    with pytest.raises(BulwarkError, match="kek key ring"):
        ArtifactStore(stolen / "artifacts", verifier=verifier).open(model, outcome.version, "trained")
    guessed = KeyRing.generate(RING_KEK)
    for folder in (stolen / "artifacts" / model / str(outcome.version) / "trained",
                   stolen / "repository" / model / str(outcome.version)):
        kid = load_ring(RING_KEK, stack.keys_dir).active
        with pytest.raises(CryptoError, match="wrong key-encryption key"):
            open_folder(folder, verifier, KeyRing(RING_KEK, kid, {kid: guessed.active_key}))
    # And the owner, with the key, opens the repository's copy to the same weights.
    assert open_folder(stolen / "repository" / model / str(outcome.version), verifier,
                       load_ring(RING_KEK, stack.keys_dir)).files["model.pt"] == weights
