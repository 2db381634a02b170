"""The signed file that carries a job to a site that is never online, and its release back
(phase 13): one format both ways, one verification.

An envelope is JSON: ``{"format": 1, "kind": "radflow.job" | "radflow.release", "from": who
signed it, "to": whom it is for, "payload": {...}, "signature": Ed25519 over the canonical JSON
of everything else}``. The hub signs a job with its key (the one each site pinned when it
joined), a site signs its release with its own (the one the hub enrolled). :func:`open_envelope`
checks, in order, that the file reads, its format and kind, that it is for this receiver, and
the signature against the key the receiver holds for the sender; each failure is a
:class:`Refused` with a code (``unreadable``, ``unsupported_format``, ``wrong_kind``,
``wrong_receiver``, ``bad_signature``) and the reason.

    data = seal(hub_key, "radflow.job", "hub", "uk-essen", payload)
    payload = open_envelope(data, "radflow.job", "uk-essen", pinned_hub_pem)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radflow.errors import FederationError
from radflow.hashing import canonical_json

FORMAT = 1
JOB = "radflow.job"
RELEASE = "radflow.release"
MAX_BYTES = 512 * 1024 * 1024  # a job file carries a bundle (and a model's weights)


class Refused(FederationError):
    """An envelope that is not taken; ``code`` says why (audited at the receiving end)."""

    def __init__(self, code: str, message: str, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.code = code


def _signed_part(envelope: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in envelope.items() if k != "signature"}).encode()


def seal(key_path: Path, kind: str, sender: str, receiver: str,
         payload: dict[str, Any]) -> bytes:
    """The envelope of ``payload`` from ``sender`` to ``receiver``, signed with the key at
    ``key_path``, as the bytes of a file."""
    from radflow.federation.signing import load, sign

    envelope = {"format": FORMAT, "kind": kind, "from": sender, "to": receiver,
                "payload": payload}
    envelope["signature"] = sign(load(key_path), _signed_part(envelope))
    return json.dumps(envelope, indent=1, sort_keys=True).encode()


def peek(data: bytes) -> dict[str, Any]:
    """The envelope, read but not verified (to find the sender's key).

    Raises:
        Refused: ``unreadable`` or ``unsupported_format``.
    """
    if len(data) > MAX_BYTES:
        raise Refused("unreadable", f"the file is larger than {MAX_BYTES >> 20} MiB",
                      fix="this is not a job file or a release file")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused("unreadable", f"the file is not an envelope: a job or release file ({exc})",
                      fix="check that the whole file was carried over") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), dict):
        raise Refused("unreadable", "the file is not an envelope: a job or release file (no payload)",
                      fix="check that the whole file was carried over")
    if envelope.get("format") != FORMAT:
        raise Refused("unsupported_format", f"envelope format {envelope.get('format')!r} is not "
                      f"the format this installation reads ({FORMAT})",
                      fix="use the same release of radflow at both ends")
    return envelope


def open_envelope(data: bytes, kind: str, receiver: str, sender_key_pem: bytes) -> dict[str, Any]:
    """The payload of a verified envelope.

    Raises:
        Refused: see the module's docstring.
    """
    from radflow.federation.signing import SignatureInvalid, verify

    envelope = peek(data)
    if envelope.get("kind") != kind:
        raise Refused("wrong_kind", f"this is a {envelope.get('kind')!r} file, not a {kind!r}",
                      fix="a site imports job files, the hub release files")
    if envelope.get("to") != receiver:
        raise Refused("wrong_receiver", f"this file is for {envelope.get('to')!r}, not for "
                      f"{receiver!r}", fix="carry it to the site (or hub) it names")
    try:
        verify(sender_key_pem, _signed_part(envelope), str(envelope.get("signature", "")))
    except SignatureInvalid:
        raise Refused("bad_signature", f"the signature of {envelope.get('from')!r} does not "
                      "verify: the file was changed after it was signed, or signed by another "
                      "key", fix="refuse it; ask for a new file, and compare key fingerprints "
                                 "by another channel") from None
    return envelope["payload"]
