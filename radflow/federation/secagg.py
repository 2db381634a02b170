"""Secure aggregation (a study option): pairwise masks that cancel in the sum, so the hub stores
and sees only masked updates, and their sum. Bonawitz et al.'s masking (CCS 2017) without its
secret sharing for drop-outs: a site that drops out after masking makes the round run again
without it, with new keys.

One round, for participants P (at least two sites, names sorted):

1. Keys. Each site makes an ephemeral X25519 key pair for this round only (:func:`new_round_key`;
   the private half never leaves the site: a job announces it and a later job uses it, so it is
   kept between the two in the site's folder, owner-only, and deleted once used:
   :func:`keep_round_key`, :func:`take_round_key`) and publishes its public key
   signed with its Ed25519 site key (:func:`announce`), the signature binding the protocol,
   the study id, the round and the site's name. The hub relays the set of announcements.
2. Verification. Each site checks every announcement against that site's known Ed25519 public
   key (:func:`verify_announcements`): a bad signature, another study or round, a missing or an
   unexpected site, or its own key replaced is refused (FederationError), never used.
3. Seeds and masks. For each peer j, site i derives a pairwise seed: X25519(i, j), then
   HKDF-SHA256 (32 bytes, info = protocol, study, round and the two names in sorted order).
   The mask is the ChaCha20 keystream of that seed (nonce 0: each seed serves once), read as
   little-endian uint32, over the whole vector.
4. The contribution. Site i sends ``cases_i * clipped_update_i`` (its weights minus the
   global weights, clipped to the study's clip_norm; see :mod:`radflow.federation.fedavg`),
   each coordinate clipped to [-bound, bound] and in fixed point (``round(x * 2**frac_bits)``)
   in Z_2^32 (:class:`FixedPoint`: ``max_total_cases * bound * 2**frac_bits < 2**31``, so the
   sum of all sites cannot wrap), plus the mask of every peer with a larger name and minus the
   mask of every peer with a smaller one, mod 2^32 (:func:`mask_contribution`). It releases
   that uint32 vector (encoded as in :mod:`radflow.federation.weights`, dtype ``uint32``) and
   its cases count in the clear.
5. The sum. The hub sums the masked vectors mod 2^32 (the masks cancel), reads the sum as
   signed, divides by 2**frac_bits and by the total cases and adds the global weights
   (:func:`unmask_mean`): plain FedAvg up to the fixed point's rounding (half a unit per site).
   With a clip_norm C, choose bound >= C: no coordinate of a clipped update exceeds its norm,
   so the coordinate clip never bites and the result is the clipped FedAvg.
6. Drop-outs. Masks cancel only when every participant's vector is in the sum. The
   coordinator calls :func:`sum_status`: while a participant is missing the sum is not
   complete, and at the deadline the round runs again with the sites that did release, each
   with new keys (a new ``attempt`` in the round's name).

What the hub learns: each site's cases count, who took part, and the sum of the weighted
updates (hence the new global model); a single masked vector is uniformly random to it. What it
cannot: one site's update, unless it colludes with all the other participants. Limits (no
secret sharing, no consistency round): the hub chooses the participant set it relays, so it
learns the sum over any set of at least two sites it presents; and a hub that claims a site
dropped out when it did not learns that site's update as the difference of the two sums
(sites that train again between attempts, or refuse a rerun, prevent it). A site's signature
stops the hub from putting its own keys in a site's place (a man in the middle).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from radflow.errors import FederationError
from radflow.federation import signing
from radflow.federation.fedavg import check_cases

PROTOCOL = "radflow-secagg-v1"
MODULUS = 1 << 32


@dataclass(frozen=True)
class FixedPoint:
    """The declared fixed point of a study's masked updates: ``frac_bits`` fractional bits, each
    coordinate of a site's update clipped to [-bound, bound] before it is weighted by its
    cases, and at most ``max_total_cases`` cases in a round, so that the sum of all sites stays
    within a signed 32-bit integer.

    Raises:
        FederationError: the declared values could let the sum wrap, or are out of range.
    """

    frac_bits: int = 20
    bound: float = 1.0
    max_total_cases: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 30 or not np.isfinite(self.bound) or self.bound <= 0 \
                or self.max_total_cases < 1:
            raise FederationError(f"secure aggregation's fixed point {self} is out of range",
                                  fix="frac_bits 0..30, bound > 0, max_total_cases >= 1")
        if self.max_total_cases * self.bound * 2.0 ** self.frac_bits >= MODULUS // 2:
            raise FederationError(
                f"max_total_cases {self.max_total_cases} x bound {self.bound} x 2^"
                f"{self.frac_bits} reaches 2^31: the masked sum could wrap",
                fix="lower frac_bits or bound, or declare fewer max_total_cases")

    @property
    def scale(self) -> float:
        return 2.0 ** self.frac_bits

    def quantize(self, update: np.ndarray, cases: int) -> np.ndarray:
        """``cases * clip(update, -bound, bound)`` in fixed point, as uint32 (mod 2^32)."""
        clipped = np.clip(np.asarray(update, dtype=np.float64), -self.bound, self.bound)
        fixed = np.rint(clipped * (cases * self.scale)).astype(np.int64)
        return np.mod(fixed, MODULUS).astype(np.uint32)

    def dequantize(self, total: np.ndarray, total_cases: int) -> np.ndarray:
        """The mean update (float32) from the uint32 sum of all contributions."""
        signed = np.asarray(total, dtype=np.uint32).view(np.int32).astype(np.float64)
        return (signed / (self.scale * total_cases)).astype(np.float32)


@dataclass(frozen=True)
class RoundKey:
    """A site's ephemeral X25519 key for one round of one study (its private half is never
    sent; kept at the site only between the job that announces it and the job that uses it)."""

    site: str
    study: str
    round: str
    private: X25519PrivateKey

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)


def new_round_key(site: str, study: str, round_name: str) -> RoundKey:
    """A fresh ephemeral key pair for ``site`` in this round (a rerun gets a new one)."""
    return RoundKey(site, str(study), str(round_name), X25519PrivateKey.generate())


def _key_file(folder: Path, study: str, round_name: str) -> Path:
    name = hashlib.sha256(f"{study}\0{round_name}".encode()).hexdigest()[:24]
    return folder / f"round-key-{name}.raw"


def keep_round_key(key: RoundKey, folder: Path) -> Path:
    """Keep the private half at the site (``folder``, owner-only) until the job that masks
    with it takes it."""
    raw = key.private.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    path = _key_file(folder, key.study, key.round)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
    os.replace(tmp, path)
    return path


def take_round_key(folder: Path, site: str, study: str, round_name: str) -> RoundKey:
    """The key this site announced for the round, removed from the disk (each key serves once).

    Raises:
        FederationError: the site has no such key (its worker lost it): the round cannot be
            masked here, and runs again without this site.
    """
    path = _key_file(folder, str(study), str(round_name))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FederationError(f"no round key kept for study {study} round {round_name}",
                              fix="nothing to do here: the hub runs the round again with "
                                  "new keys") from None
    path.unlink(missing_ok=True)
    return RoundKey(site, str(study), str(round_name), X25519PrivateKey.from_private_bytes(raw))


def _message(study: str, round_name: str, site: str, public_key: str) -> bytes:
    """What a site signs: the protocol, study, round, site and public key, canonical JSON."""
    return json.dumps({"protocol": PROTOCOL, "study": study, "round": round_name, "site": site,
                       "public_key": public_key}, sort_keys=True,
                      separators=(",", ":")).encode()


def announce(key: RoundKey, site_key: object) -> dict[str, str]:
    """The site's signed public key for the hub to relay (``site_key``: its Ed25519 key,
    :func:`radflow.federation.signing.load`)."""
    public = base64.b64encode(key.public_bytes()).decode()
    return {"site": key.site, "study": key.study, "round": key.round, "public_key": public,
            "signature": signing.sign(site_key, _message(key.study, key.round, key.site,
                                                         public))}


def verify_announcements(announcements: Sequence[Mapping[str, str]],
                         known: Mapping[str, bytes], study: str, round_name: str,
                         participants: Iterable[str]) -> dict[str, bytes]:
    """The participants' X25519 public keys (raw bytes, by site), each announcement checked
    against that site's known Ed25519 public key (PEM, as enrolled).

    Raises:
        FederationError: fewer than two participants, a site missing, unexpected or twice, a
            site without a known key, another study or round, a malformed key, a bad signature.
    """
    expected = sorted(set(participants))
    if len(expected) < 2:
        raise FederationError(f"secure aggregation needs two sites or more, got {expected}",
                              fix="run the round without secure aggregation, or with more sites")
    keys: dict[str, bytes] = {}
    for item in announcements:
        site = item.get("site") if isinstance(item, Mapping) else None
        if site not in expected:
            raise FederationError(f"an announcement from {site!r}, not a participant "
                                  f"({expected})", fix="refuse this round: the hub relayed a "
                                                        "key set that does not match")
        if site in keys:
            raise FederationError(f"two announcements from {site!r}",
                                  fix="refuse this round and tell the hub's operator")
        if item.get("study") != str(study) or item.get("round") != str(round_name):
            raise FederationError(f"{site!r}'s key is for another study or round",
                                  fix="refuse this round: a key of another round was replayed")
        if site not in known:
            raise FederationError(f"no known Ed25519 key for site {site!r}",
                                  fix="the site must be enrolled at the hub before it takes "
                                      "part")
        public = item.get("public_key", "")
        try:
            raw = base64.b64decode(public, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raw = b""
        if len(raw) != 32:
            raise FederationError(f"{site!r}'s public key is not 32 bytes of base64",
                                  fix="refuse this round and tell the hub's operator")
        try:
            signing.verify(known[site], _message(str(study), str(round_name), site, public),
                           str(item.get("signature", "")))
        except signing.SignatureInvalid:
            raise FederationError(f"the signature on {site!r}'s round key does not verify "
                                  "against its known Ed25519 key",
                                  fix="refuse this round (a forged or altered key) and tell "
                                      "the hub's operator") from None
        keys[site] = raw
    missing = sorted(set(expected) - set(keys))
    if missing:
        raise FederationError(f"no round key from {missing}",
                              fix="refuse this round: every participant's key is needed")
    return keys


def pair_seed(key: RoundKey, peer: str, peer_public: bytes) -> bytes:
    """The 32-byte seed ``key.site`` shares with ``peer``: X25519, then HKDF-SHA256 with the
    protocol, study, round and both names (sorted) as info."""
    shared = key.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    info = json.dumps([PROTOCOL, key.study, key.round, *sorted((key.site, peer))],
                      separators=(",", ":")).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def mask(seed: bytes, size: int) -> np.ndarray:
    """``size`` uint32 values of the ChaCha20 keystream of ``seed`` (little-endian)."""
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(4 * size)), dtype="<u4").astype(np.uint32)


def mask_contribution(key: RoundKey, peers: Mapping[str, bytes], update: np.ndarray,
                      cases: int, fixed: FixedPoint) -> np.ndarray:
    """The site's masked contribution (uint32): its (clipped) update weighted by its cases in
    fixed point, plus the masks of the peers after it and minus those before it (by name).

    Raises:
        FederationError: ``peers`` (from :func:`verify_announcements`) lacks this site's own
            key or holds another one in its place, or the cases count is no positive integer.
    """
    cases = check_cases(key.site, cases)
    if peers.get(key.site) != key.public_bytes():
        raise FederationError(f"the relayed key set does not hold {key.site!r}'s own key",
                              fix="refuse this round: the hub replaced or left out this site")
    total = fixed.quantize(update, cases)
    for peer, public in peers.items():
        if peer == key.site:
            continue
        m = mask(pair_seed(key, peer, public), total.size)
        total = total + m if peer > key.site else total - m  # uint32 wraps: mod 2^32
    return total


@dataclass(frozen=True)
class SumStatus:
    """Which participants' masked vectors are in; the sum unmasks only when ``complete``."""

    participants: list[str]
    received: list[str]
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def rerun_with(self) -> list[str]:
        """The sites of the next attempt when the sum cannot be completed (new keys)."""
        return list(self.received)


def sum_status(participants: Iterable[str], received: Iterable[str]) -> SumStatus:
    """Whether the masked sum of a round is complete: ``participants`` are the sites whose keys
    the hub relayed, ``received`` those whose masked vectors came in (others are ignored: a
    vector from outside the key set cannot be unmasked either)."""
    expected = sorted(set(participants))
    got = sorted(set(received) & set(expected))
    return SumStatus(expected, got, sorted(set(expected) - set(got)))


def unmask_mean(global_weights: np.ndarray, masked: Mapping[str, np.ndarray],
                cases: Mapping[str, int], participants: Iterable[str],
                fixed: FixedPoint) -> tuple[np.ndarray, int]:
    """The new global vector (float32) and the total cases: the masked vectors summed mod 2^32,
    dequantized, divided by the total cases and added to the global weights.

    Raises:
        FederationError: the sum is incomplete (run the round again without the missing sites),
            a vector from outside the participants, a length that differs, or more cases than
            the fixed point allows.
    """
    status = sum_status(participants, masked)
    if not status.complete:
        raise FederationError(f"the masked sum lacks {status.missing}: it cannot be unmasked",
                              fix=f"run the round again with {status.rerun_with} (new keys)")
    if set(masked) != set(status.participants):
        raise FederationError("a masked vector from a site outside the round's key set",
                              fix="combine only the participants' vectors")
    base = np.asarray(global_weights, dtype=np.float32)
    total = np.zeros(base.shape, dtype=np.uint32)
    total_cases = 0
    for site in status.participants:
        vector = np.asarray(masked[site])
        if vector.dtype != np.uint32 or vector.shape != base.shape:
            raise FederationError(f"site {site!r}'s masked vector is {vector.dtype} "
                                  f"{vector.shape}, expected uint32 {base.shape}",
                                  fix="the site masked another plan's vector: leave it out and "
                                      "run the round again")
        total += vector  # wraps mod 2^32
        total_cases += check_cases(site, cases.get(site))
    if total_cases > fixed.max_total_cases:
        raise FederationError(f"{total_cases} cases exceed the declared max_total_cases "
                              f"{fixed.max_total_cases}: the sum may have wrapped",
                              fix="declare a larger max_total_cases (and a smaller frac_bits)")
    return base + fixed.dequantize(total, total_cases), total_cases
