"""Ed25519 keys and signatures: the hub signs each flow version's content hash, sites pin the
hub's public key, and each site signs its client assertions with its own key (which never leaves
the site: written 0600, never logged).

    key = generate(path)                  # private key PEM at path (0600), public at path.pub
    sig = sign(key, digest_bytes)
    verify(public_key_pem, digest_bytes, sig)    # raises SignatureInvalid
    fingerprint(public_key_pem)           # 'SHA256:ab:cd:...' to compare by another channel
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from radflow.errors import ConfigurationError, RadflowError


class SignatureInvalid(RadflowError):
    """A signature does not verify against the pinned key (refusal code ``bad_signature``)."""

    code = "bad_signature"


def generate(path: Path):
    """A new Ed25519 private key, saved (PEM) at ``path`` with mode 0600 and its public key at
    ``path.pub``. Refuses to overwrite an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path.exists():
        raise ConfigurationError(f"a key already exists at {path}",
                                 fix="keep it (it is this party's identity), or remove it on "
                                     "purpose and enrol again")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    path.with_suffix(path.suffix + ".pub").write_bytes(public_pem(key))
    return key


def load(path: Path):
    """The private key at ``path``; refuses a key file others can read."""
    from cryptography.hazmat.primitives import serialization

    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others (mode {oct(mode)})",
                                 fix=f"chmod 600 {path}")
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key, message: bytes) -> str:
    """The signature of ``message``, base64 (URL-safe, no padding)."""
    return base64.urlsafe_b64encode(key.sign(message)).rstrip(b"=").decode()


def verify(public_key_pem: bytes, message: bytes, signature: str) -> None:
    """Check a signature.

    Raises:
        SignatureInvalid: it does not verify (a changed message, another key, a bad encoding).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        public = serialization.load_pem_public_key(public_key_pem)
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        public.verify(raw, message)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise SignatureInvalid("the signature does not verify against the pinned key",
                               fix="refuse the bundle; ask the hub's operator, comparing key "
                                   "fingerprints by another channel") from exc


def fingerprint(public_key_pem: bytes) -> str:
    """``SHA256:`` and the key's hash in colon-separated hex pairs (16 of them), to compare by
    telephone or in person."""
    from cryptography.hazmat.primitives import serialization

    raw = serialization.load_pem_public_key(public_key_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    hexed = hashlib.sha256(raw).hexdigest()[:32]
    return "SHA256:" + ":".join(hexed[i:i + 2] for i in range(0, 32, 2))
