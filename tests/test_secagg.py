"""Secure aggregation's protocol with real keys (Ed25519 site keys, ephemeral X25519, HKDF,
ChaCha20 masks): masks cancel exactly in Z_2^32, the secure mean equals plain FedAvg within
fp16 tolerance at a realistic size, a forged or missing key is refused before use, and a site
missing from the sum is detected (the round runs again without it)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from radflow.errors import FederationError
from radflow.federation import signing
from radflow.federation.fedavg import SiteWeights, clip_update, fedavg
from radflow.federation.secagg import (
    FixedPoint,
    announce,
    mask,
    mask_contribution,
    new_round_key,
    pair_seed,
    sum_status,
    unmask_mean,
    verify_announcements,
)
from radflow.federation.weights import check_encoded, encode

SITES = ("essen", "leiden", "zurich")
STUDY, ROUND = "study-7", "train-1"


@pytest.fixture(scope="module")
def identities() -> dict[str, Ed25519PrivateKey]:
    return {site: Ed25519PrivateKey.generate() for site in SITES}


def known(identities) -> dict[str, bytes]:
    return {site: signing.public_pem(key) for site, key in identities.items()}


def keys_round(identities, sites=SITES, round_name=ROUND):
    keys = {s: new_round_key(s, STUDY, round_name) for s in sites}
    announced = [announce(keys[s], identities[s]) for s in sites]
    return keys, announced


def test_pairwise_masks_cancel_exactly_in_z_2_32(identities) -> None:
    keys, announced = keys_round(identities)
    peers = verify_announcements(announced, known(identities), STUDY, ROUND, SITES)
    assert pair_seed(keys["essen"], "zurich", peers["zurich"]) == \
        pair_seed(keys["zurich"], "essen", peers["essen"])  # both ends derive the same seed
    assert pair_seed(keys["essen"], "zurich", peers["zurich"]) != \
        pair_seed(keys["essen"], "leiden", peers["leiden"])
    zero = np.zeros(10_001, np.float32)
    fixed = FixedPoint()
    masked = [mask_contribution(keys[s], peers, zero, 1, fixed) for s in SITES]
    assert all(m.dtype == np.uint32 and m.any() for m in masked)  # each one looks random
    total = masked[0] + masked[1] + masked[2]
    assert not total.any()  # the masks cancel exactly
    m = mask(b"\x01" * 32, 5)
    assert np.array_equal(m, mask(b"\x01" * 32, 5)) and m.dtype == np.uint32  # deterministic


def test_secure_mean_equals_plain_fedavg_at_realistic_size(identities) -> None:
    size = 1_400_000
    rng = np.random.default_rng(7)
    global_weights = rng.normal(0, 0.1, size).astype(np.float32)
    released = {s: (global_weights + rng.normal(0, 0.01, size)).astype(np.float16)
                for s in SITES}
    cases = {"essen": 14, "leiden": 31, "zurich": 9}
    clip = 5.0
    plain = fedavg(global_weights, [SiteWeights(s, released[s], cases[s]) for s in SITES],
                   clip_norm=clip)
    assert any(n.clipped for n in plain.norms)  # the clip bites: sum of squares ~ 140

    keys, announced = keys_round(identities)
    fixed = FixedPoint(frac_bits=20, bound=clip, max_total_cases=300)  # bound >= clip_norm
    wire = {}
    for s in SITES:  # each site: verify, clip, mask, encode
        peers = verify_announcements(announced, known(identities), STUDY, ROUND, SITES)
        update, _, _ = clip_update(released[s].astype(np.float32) - global_weights, clip)
        wire[s] = encode(mask_contribution(keys[s], peers, update, cases[s], fixed), "uint32")
    masked = {s: check_encoded(wire[s], (size,), ("uint32",)) for s in SITES}  # at the hub
    secure, total = unmask_mean(global_weights, masked, cases, SITES, fixed)
    assert total == 54 and secure.dtype == np.float32
    difference = float(np.abs(secure - plain.weights).max())
    assert difference < 1e-5, difference  # fp16's step at 0.1 is 6e-5
    plain_delta = plain.weights - global_weights  # a masked vector does not follow the update
    assert np.corrcoef(masked["essen"].astype(np.float64)[:10_000],
                       plain_delta[:10_000])[0, 1] < 0.05


def test_a_forged_or_missing_key_is_refused(identities) -> None:
    _, announced = keys_round(identities)
    pems = known(identities)
    forged = [dict(a) for a in announced]
    forged[1]["public_key"] = announce(new_round_key("leiden", STUDY, ROUND),
                                       Ed25519PrivateKey.generate())["public_key"]
    with pytest.raises(FederationError, match="signature on 'leiden'"):
        verify_announcements(forged, pems, STUDY, ROUND, SITES)
    impostor = announce(new_round_key("leiden", STUDY, ROUND), Ed25519PrivateKey.generate())
    with pytest.raises(FederationError, match="signature on 'leiden'"):  # signed by another key
        verify_announcements([announced[0], impostor, announced[2]], pems, STUDY, ROUND, SITES)
    with pytest.raises(FederationError, match=r"no round key from \['zurich'\]"):
        verify_announcements(announced[:2], pems, STUDY, ROUND, SITES)
    with pytest.raises(FederationError, match="another study or round"):
        verify_announcements(announced, pems, STUDY, "train-2", SITES)  # replayed
    with pytest.raises(FederationError, match="not a participant"):
        verify_announcements(announced, pems, STUDY, ROUND, SITES[:2])
    with pytest.raises(FederationError, match="no known Ed25519 key"):
        verify_announcements(announced, {s: pems[s] for s in SITES[:2]}, STUDY, ROUND, SITES)
    with pytest.raises(FederationError, match="two sites or more"):
        verify_announcements(announced[:1], pems, STUDY, ROUND, SITES[:1])
    # the hub relays a key set without this site's own key in it: refused before masking
    keys, _ = keys_round(identities)
    peers = verify_announcements(announced, pems, STUDY, ROUND, SITES)
    with pytest.raises(FederationError, match="own key"):
        mask_contribution(keys["essen"], peers, np.zeros(4, np.float32), 3, FixedPoint())


def test_a_dropped_site_is_detected_and_the_round_reruns_without_it(identities) -> None:
    keys, announced = keys_round(identities)
    peers = verify_announcements(announced, known(identities), STUDY, ROUND, SITES)
    fixed = FixedPoint()
    update = np.full(100, 0.25, np.float32)
    masked = {s: mask_contribution(keys[s], peers, update, 2, fixed) for s in SITES[:2]}
    status = sum_status(SITES, masked)
    assert (status.complete, status.missing, status.rerun_with) == (
        False, ["zurich"], ["essen", "leiden"])
    with pytest.raises(FederationError, match=r"lacks \['zurich'\]"):
        unmask_mean(np.zeros(100, np.float32), masked, {"essen": 2, "leiden": 2}, SITES, fixed)
    again = f"{ROUND}-attempt-2"  # new keys for the remaining sites
    keys2, announced2 = keys_round(identities, status.rerun_with, again)
    peers2 = verify_announcements(announced2, known(identities), STUDY, again,
                                  status.rerun_with)
    masked2 = {s: mask_contribution(keys2[s], peers2, update, 2, fixed)
               for s in status.rerun_with}
    assert sum_status(status.rerun_with, masked2).complete
    mean, total = unmask_mean(np.zeros(100, np.float32), masked2, {"essen": 2, "leiden": 2},
                              status.rerun_with, fixed)
    assert total == 4 and np.allclose(mean, 0.25)


def test_the_fixed_point_cannot_wrap() -> None:
    with pytest.raises(FederationError, match="wrap"):
        FixedPoint(frac_bits=24, bound=1.0, max_total_cases=200)  # 200 * 2^24 > 2^31
    fixed = FixedPoint(frac_bits=10, bound=2.0, max_total_cases=10)
    q = fixed.quantize(np.array([-3.0, -0.5, 0.0, 1.0], np.float32), 5)
    assert q.dtype == np.uint32 and list(q.view(np.int32)) == [-10240, -2560, 0, 5120]
    with pytest.raises(FederationError, match="max_total_cases"):
        unmask_mean(np.zeros(4, np.float32), {"a": q, "b": q}, {"a": 6, "b": 6}, ["a", "b"],
                    fixed)


def test_a_round_key_leaves_through_the_gate_and_nothing_else_fits(identities) -> None:
    from radflow.federation.egress import gate
    from radflow.federation.policy import SitePolicy
    from radflow.federation.release import ReleaseField, ReleaseSchema
    from radflow.federation.structure import check_release

    schema = ReleaseSchema(fields={"n": ReleaseField(kind="count"),
                                   "next_key": ReleaseField(kind="round_key")})
    signed = announce(new_round_key("essen", STUDY, ROUND), identities["essen"])
    sent = {k: signed[k] for k in ("public_key", "signature")}
    out = gate({"n": 12, "next_key": sent}, schema, SitePolicy())
    assert out.ok and out.released["next_key"] == sent
    check_release(out.released, schema, released=True)  # what the hub runs on it
    # the hub relays it with the job's study, round and site; the peers verify it
    relayed = [{**sent, "site": "essen", "study": STUDY, "round": ROUND}]
    assert set(verify_announcements(relayed + [
        announce(new_round_key(s, STUDY, ROUND), identities[s]) for s in ("leiden",)],
        known(identities), STUDY, ROUND, ["essen", "leiden"])) == {"essen", "leiden"}
    for bad in (signed,  # extra keys (site, study, round): the job says them
                {**sent, "public_key": sent["public_key"][:-8] + "AAA="},  # 31 bytes
                {**sent, "public_key": "patient 12345 " * 3},  # free text
                {**sent, "signature": sent["signature"] + "A"},
                {"public_key": sent["public_key"]}, "key", [sent]):
        refused = gate({"n": 12, "next_key": bad}, schema, SitePolicy())
        assert refused.refusal == "policy_violation:schema", bad
    schema_json = schema.json_schema()["properties"]["next_key"]
    assert schema_json["x-radflow-kind"] == "round_key"
    with pytest.raises(ValueError, match="scalar"):
        ReleaseField(kind="round_key", shape=(2,))


def test_a_round_key_is_kept_owner_only_until_it_is_used_once(tmp_path) -> None:
    from radflow.federation.secagg import keep_round_key, take_round_key

    key = new_round_key("essen", STUDY, ROUND)
    path = keep_round_key(key, tmp_path / "keys")
    assert path.stat().st_mode & 0o077 == 0
    taken = take_round_key(tmp_path / "keys", "essen", STUDY, ROUND)
    assert taken.public_bytes() == key.public_bytes()
    assert not path.exists()
    with pytest.raises(FederationError, match="no round key kept"):
        take_round_key(tmp_path / "keys", "essen", STUDY, ROUND)
