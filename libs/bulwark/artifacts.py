"""Model artifacts: signed, encrypted at rest, written atomically, verified before every load.

An artifact is a folder `<store>/<model>/<version>/<stage>/` (stage: trained, quantized, or gate for the
robustness gate's signed report):

- `manifest.json`: model, version, stage, family, parent, creation time, the model card (metrics, dataset
  digest, privacy facts, reports), and for each file its size, SHA-256 of the stored bytes and of the
  plaintext, and whether it is encrypted;
- `manifest.sig`: an Ed25519 signature over the exact manifest bytes, with the signing key id;
- the files. Weight files are sealed with envelope encryption: one fresh 256-bit data key per artifact
  (AES-GCM, the file name as associated data), the data key wrapped by the `kek` key ring. Plaintext
  weights never touch disk: loaders decrypt into memory.

The signature covers the manifest, which pins every file's stored digest and plaintext digest, so changing
any byte of any file, the wrapped key, or the manifest is refused. Writing goes to a temporary folder
that is renamed into place only when complete: a crash never leaves a half-written artifact.
Rotating the key-encryption key re-wraps data keys (`rewrap()`), never re-encrypting weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark.crypto.aead import open_bytes, seal_bytes
from bulwark.crypto.keys import KeyRing, b64d, b64e
from bulwark.crypto.signing import Signer, Verifier
from bulwark.errors import BulwarkError, CryptoError, NotFoundError, Reason, SignatureError

FORMAT = "bulwark.artifact/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
STAGES = ("trained", "quantized", "gate")


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def canonical(doc: dict[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces): what gets signed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class ArtifactWriter:
    """Collects files for one artifact, then seals, signs and publishes them atomically."""

    model: str
    version: int
    stage: str
    family: str
    parent: str | None = None
    card: dict[str, Any] = field(default_factory=dict)
    _files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)

    def add(self, name: str, data: bytes, *, encrypt: bool = True) -> None:
        """Add a file; weight-bearing files are encrypted (the default)."""
        if "/" in name or name in (MANIFEST, SIGNATURE):
            raise ValueError(f"bad artifact file name {name!r}")
        self._files[name] = (data, encrypt)

    def add_json(self, name: str, doc: Any, *, encrypt: bool = False) -> None:
        """Add a JSON document (metadata is signed, not encrypted, unless asked)."""
        self.add(name, json.dumps(doc, indent=2, sort_keys=True, default=str).encode(), encrypt=encrypt)


class ArtifactStore:
    """A folder of artifacts; writes need the signer and KEK ring, reads the verifier and KEK ring."""

    def __init__(self, root: Path, *, verifier: Verifier | None = None, kek: KeyRing | None = None,
                 signer: Signer | None = None) -> None:
        self.root = root
        self._verifier = verifier
        self._kek = kek
        self._signer = signer

    def path(self, model: str, version: int, stage: str) -> Path:
        """Folder of one artifact."""
        return self.root / model / str(version) / stage

    # ------------------------------------------------------------------ write
    def publish(self, w: ArtifactWriter) -> Path:
        """Seal, sign and move the artifact into place; returns its folder. Idempotent per (model, version,
        stage): if it exists and verifies, it is kept as is (a re-run after a crash publishes the same one)."""
        if self._signer is None or self._kek is None:
            raise BulwarkError(Reason.FAILED_PRECONDITION, "writing artifacts needs the signing key and the kek ring")
        if w.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        final = self.path(w.model, w.version, w.stage)
        if final.exists():
            self.verify(w.model, w.version, w.stage)
            return final
        data_key = os.urandom(32)
        files: dict[str, Any] = {}
        tmp = final.parent / f".tmp-{w.stage}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name, (plain, encrypt) in sorted(w._files.items()):
                stored = seal_bytes(data_key, plain, name.encode()) if encrypt else plain
                _write(tmp / name, stored)
                files[name] = {"size": len(plain), "sha256": sha256(stored), "plaintext_sha256": sha256(plain),
                               "encrypted": encrypt}
            manifest = {
                "format": FORMAT, "model": w.model, "version": w.version, "stage": w.stage, "family": w.family,
                "parent": w.parent, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "card": w.card, "files": files,
                "data_key": {"kek_id": self._kek.active,
                             "wrapped": b64e(seal_bytes(self._kek.active_key, data_key, _key_aad(w)))},
            }
            body = canonical(manifest)
            _write(tmp / MANIFEST, body)
            _write(tmp / SIGNATURE, json.dumps({"key_id": self._signer.key_id,
                                                "signature": self._signer.sign(body)}).encode())
            os.replace(tmp, final)  # atomic: readers see all of it or none of it
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def clean_partial(self) -> int:
        """Remove temporary folders left by a crashed writer; returns how many."""
        n = 0
        for tmp in self.root.glob("*/*/.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
            n += 1
        return n

    # ------------------------------------------------------------------ read
    def verify(self, model: str, version: int, stage: str) -> dict[str, Any]:
        """Check the signature and every file's stored digest; returns the manifest. Raises `SignatureError`."""
        return verify_folder(self.path(model, version, stage), self._require_verifier())

    def open(self, model: str, version: int, stage: str) -> Artifact:
        """Verify, then decrypt every file into memory (checking plaintext digests)."""
        return open_folder(self.path(model, version, stage), self._require_verifier(), self._require_kek())

    def rewrap(self, model: str, version: int, stage: str, new_kek: KeyRing, signer: Signer) -> None:
        """Re-wrap the artifact's data key under `new_kek`'s active key and re-sign; weights untouched."""
        folder = self.path(model, version, stage)
        manifest = verify_folder(folder, self._require_verifier())
        dk = manifest["data_key"]
        data_key = open_bytes(self._require_kek().key(dk["kek_id"]), b64d(dk["wrapped"]), _manifest_key_aad(manifest))
        manifest["data_key"] = {"kek_id": new_kek.active,
                                "wrapped": b64e(seal_bytes(new_kek.active_key, data_key, _manifest_key_aad(manifest)))}
        body = canonical(manifest)
        _write(folder / (MANIFEST + ".new"), body)
        _write(folder / (SIGNATURE + ".new"), json.dumps({"key_id": signer.key_id, "signature": signer.sign(body)}).encode())
        os.replace(folder / (SIGNATURE + ".new"), folder / SIGNATURE)
        os.replace(folder / (MANIFEST + ".new"), folder / MANIFEST)

    def versions(self, model: str) -> list[int]:
        """Versions with at least one published stage."""
        d = self.root / model
        if not d.exists():
            return []
        return sorted(int(p.name) for p in d.iterdir()
                      if p.name.isdigit() and any((p / stage / MANIFEST).exists() for stage in STAGES))

    def delete(self, model: str, version: int) -> None:
        """Remove every stage of a version (retirement)."""
        shutil.rmtree(self.root / model / str(version), ignore_errors=True)

    def _require_verifier(self) -> Verifier:
        if self._verifier is None:
            raise BulwarkError(Reason.FAILED_PRECONDITION, "reading artifacts needs the verify keys")
        return self._verifier

    def _require_kek(self) -> KeyRing:
        if self._kek is None:
            raise BulwarkError(Reason.FAILED_PRECONDITION, "decrypting artifacts needs the kek key ring "
                               "(BULWARK_KEYRING_KEK or <keys>/kek.json)")
        return self._kek


@dataclass
class Artifact:
    """A verified artifact with its files decrypted in memory."""

    folder: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def model(self) -> str:
        """Model name."""
        return self.manifest["model"]

    @property
    def version(self) -> int:
        """Version number."""
        return int(self.manifest["version"])

    @property
    def family(self) -> str:
        """Model family name."""
        return self.manifest["family"]

    @property
    def card(self) -> dict[str, Any]:
        """The model card (metrics, dataset digest, reports)."""
        return self.manifest["card"]

    @property
    def digest(self) -> str:
        """SHA-256 of the signed manifest: the artifact's identity."""
        return sha256(canonical(self.manifest))

    def json(self, name: str) -> Any:
        """A JSON file of the artifact."""
        return json.loads(self.files[name])

    def stream(self, name: str) -> io.BytesIO:
        """A file as an in-memory stream (for torch.load / torch.jit.load)."""
        return io.BytesIO(self.files[name])


def verify_folder(folder: Path, verifier: Verifier) -> dict[str, Any]:
    """Verify an artifact folder's signature and stored digests; returns the manifest."""
    try:
        body = (folder / MANIFEST).read_bytes()
        sig = json.loads((folder / SIGNATURE).read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"no artifact at {folder} (missing {MANIFEST} or {SIGNATURE})") from None
    except ValueError:
        raise SignatureError(f"artifact {folder}: signature file is malformed") from None
    verifier.verify(body, sig.get("signature", ""), sig.get("key_id", ""))
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise SignatureError(f"artifact {folder}: unknown format {manifest.get('format')!r}")
    for name, meta in manifest["files"].items():
        try:
            stored = (folder / name).read_bytes()
        except FileNotFoundError:
            raise SignatureError(f"artifact {folder}: file {name} is missing") from None
        if sha256(stored) != meta["sha256"]:
            raise SignatureError(f"artifact {folder}: file {name} does not match its signed digest (tampered)")
    return manifest


def open_folder(folder: Path, verifier: Verifier, kek: KeyRing) -> Artifact:
    """Verify an artifact folder and decrypt its files into memory."""
    manifest = verify_folder(folder, verifier)
    dk = manifest["data_key"]
    try:
        data_key = open_bytes(kek.key(dk["kek_id"]), b64d(dk["wrapped"]), _manifest_key_aad(manifest))
    except CryptoError:
        raise CryptoError(f"artifact {folder}: cannot unwrap its data key with kek {dk['kek_id']!r}: "
                          "wrong key-encryption key") from None
    files = {}
    for name, meta in manifest["files"].items():
        stored = (folder / name).read_bytes()
        plain = open_bytes(data_key, stored, name.encode()) if meta["encrypted"] else stored
        if sha256(plain) != meta["plaintext_sha256"]:
            raise SignatureError(f"artifact {folder}: file {name} decrypts to content that does not match "
                                 "its signed plaintext digest")
        files[name] = plain
    return Artifact(folder, manifest, files)


def _key_aad(w: ArtifactWriter) -> bytes:
    return f"{w.model}|{w.version}|{w.stage}".encode()


def _manifest_key_aad(m: dict[str, Any]) -> bytes:
    return f"{m['model']}|{m['version']}|{m['stage']}".encode()


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
