"""Phase 6 foundations, as pure logic: the release schema, the site policy file, the egress gate
(schema match, minimum cohort, small cells with complementary suppression, no free text, no
identifiers, declared shapes, no weights, no per-case arrays), Ed25519 signing and the signed
FlowVersion manifest (a changed byte anywhere is refused)."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

import numpy as np
import pytest

from radflow.errors import ConfigurationError
from radflow.federation.egress import gate, looks_identifying
from radflow.federation.manifest import (
    FlowVersion,
    SignedVersion,
    file_hashes,
    missing_plugins,
    sign_version,
    verify_version,
)
from radflow.federation.policy import SitePolicy, load_policy, save_policy, set_values
from radflow.federation.release import ReleaseField, ReleaseSchema
from radflow.federation.signing import SignatureInvalid, fingerprint, generate, load, sign, verify
from radflow.federation.structure import Refused, check_release
from radflow.federation.weights import encode

REPO = Path(__file__).resolve().parents[1]

SCHEMA = ReleaseSchema(fields={
    "n": ReleaseField(kind="count"),
    "contrast": ReleaseField(kind="count"),
    "volume_sum": ReleaseField(kind="sum"),
    "hu_histogram": ReleaseField(kind="histogram", shape=(6,)),
    "vendor": ReleaseField(kind="enum", values=("siemens", "ge", "philips", "mixed")),
})


def release(**changes) -> dict:
    base = {"n": 40, "contrast": 22, "volume_sum": 51234.5,
            "hu_histogram": [0, 9, 12, 11, 6, 2], "vendor": "mixed"}
    return base | changes


def test_a_clean_release_leaves_with_small_cells_suppressed() -> None:
    out = gate(release(), SCHEMA, SitePolicy())
    assert out.ok and out.refusal is None
    # bin 5 (2 < 5) is suppressed, and with n released it could be recomputed from the others:
    # the smallest other non-zero bin (4: 6) goes too; zeros stay (nothing to hide)
    assert out.released["hu_histogram"] == [0, 9, 12, 11, None, None]
    assert out.suppressed == ["hu_histogram[4]", "hu_histogram[5]"]
    assert out.released["n"] == 40 and out.released["volume_sum"] == 51234.5
    small = gate(release(contrast=3), SCHEMA, SitePolicy())
    assert small.released["contrast"] is None and "contrast" in small.suppressed
    two = gate(release(hu_histogram=[0, 2, 3, 15, 10, 10]), SCHEMA, SitePolicy())
    assert two.released["hu_histogram"] == [0, None, None, 15, 10, 10]  # two hide each other


@pytest.mark.parametrize(("changed", "code"), [
    ({"n": 9}, "min_cohort"),
    ({"vendor": "Siemens Healthineers SOMATOM"}, "free_text"),
    ({"vendor": "1.2.840.113619.2.55.3"}, "identifier"),
    ({"hu_histogram": [1, 2, 3]}, "shape"),
    ({"hu_histogram": [[1], 2, 3, 4, 5, 6]}, "shape"),
    ({"contrast": -1}, "schema"),
    ({"contrast": True}, "schema"),
    ({"volume_sum": float("nan")}, "schema"),
    ({"contrast": "MUSTERMANN^MAX"}, "identifier"),
    ({"contrast": "twenty"}, "free_text"),
])
def test_bad_releases_are_refused_with_a_code(changed: dict, code: str) -> None:
    out = gate(release(**changed), SCHEMA, SitePolicy())
    assert (out.ok, out.released, out.refusal) == (False, None, f"policy_violation:{code}")


def test_fields_must_match_the_schema_exactly() -> None:
    extra = release() | {"patient_name": "x"}
    assert gate(extra, SCHEMA, SitePolicy()).refusal == "policy_violation:schema"
    missing = release()
    missing.pop("vendor")
    assert gate(missing, SCHEMA, SitePolicy()).refusal == "policy_violation:schema"
    assert gate(release() | {"2023-11-16": 1}, SCHEMA, SitePolicy()).refusal == \
        "policy_violation:identifier"  # keys are checked too
    assert gate([1, 2], SCHEMA, SitePolicy()).refusal == "policy_violation:schema"


def test_weights_only_where_allowed_and_no_per_case_arrays() -> None:
    schema = ReleaseSchema(fields={"n": ReleaseField(kind="count"),
                                   "w": ReleaseField(kind="weights", shape=(2, 2)),
                                   "grad": ReleaseField(kind="matrix", shape=(12,))})
    body = {"n": 12, "w": encode(np.array([[0.1, 0.2], [0.3, 0.4]])), "grad": [0.0] * 12}
    assert gate(body, schema, SitePolicy(min_cohort=10)).refusal == "policy_violation:weights"
    allowed = SitePolicy(min_cohort=10, allow_weights=True)
    assert gate(body, schema, allowed).refusal == "policy_violation:per_case"  # 12 rows, n=12
    assert gate(body | {"n": 40}, schema, allowed).ok


def test_schemas_cannot_declare_extremes_or_bad_fields() -> None:
    with pytest.raises(ValueError, match="extreme"):
        ReleaseSchema(fields={"n": ReleaseField(kind="count"), "hu_max": ReleaseField(kind="sum")})
    with pytest.raises(ValueError, match="cohort size"):
        ReleaseSchema(fields={"total": ReleaseField(kind="sum")})
    with pytest.raises(ValueError, match="shape"):
        ReleaseField(kind="histogram")
    with pytest.raises(ValueError, match="values"):
        ReleaseField(kind="enum")
    uid_enum = ReleaseSchema(fields={"n": ReleaseField(kind="count"),
                                     "series": ReleaseField(kind="enum", values=("1.2.3.4.5",))})
    assert gate({"n": 20, "series": "1.2.3.4.5"}, uid_enum, SitePolicy()).refusal == \
        "policy_violation:identifier"
    schema = SCHEMA.json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == sorted(SCHEMA.fields)
    assert schema["properties"]["hu_histogram"]["maxItems"] == 6


def test_identifier_patterns() -> None:
    for text in ("1.2.826.0.1.3680043.8.498.1", "2023-11-16", "20231116", "DOE^JANE",
                 "PID0012345", "jane.doe@clinic.example", "14:05:33"):
        assert looks_identifying(text), text
    for text in ("liver", "siemens", "mixed", "age_60_69", "3.5"):
        assert not looks_identifying(text), text


def test_policy_file_defaults_show_and_set(tmp_path: Path) -> None:
    assert load_policy(tmp_path) == SitePolicy()  # no file: the documented defaults
    assert (SitePolicy().min_cohort, SitePolicy().min_cell, SitePolicy().approved) == (10, 5, [])
    changed = set_values(SitePolicy(), ["min_cohort=20", "job_mode=auto"])
    path = save_policy(tmp_path, changed)
    assert "# min_cell:" in path.read_text()  # the defaults are documented in the file
    assert load_policy(tmp_path) == changed
    with pytest.raises(ConfigurationError, match="cannot set"):
        set_values(SitePolicy(), ["approved=[x]"])  # approvals have their own commands
    with pytest.raises(ConfigurationError, match="invalid policy value"):
        set_values(SitePolicy(), ["min_cohort=0"])
    path.write_text("min_cohort: [\n")
    with pytest.raises(ConfigurationError, match="not a valid site policy"):
        load_policy(tmp_path)


def test_keys_signatures_and_fingerprints(tmp_path: Path) -> None:
    key = generate(tmp_path / "site.key")
    assert sign(key, b"x") == sign(load(tmp_path / "site.key"), b"x")  # Ed25519: deterministic
    assert stat.S_IMODE((tmp_path / "site.key").stat().st_mode) == 0o600
    public = (tmp_path / "site.key.pub").read_bytes()
    signature = sign(load(tmp_path / "site.key"), b"sha256:abc")
    verify(public, b"sha256:abc", signature)
    with pytest.raises(SignatureInvalid):
        verify(public, b"sha256:abd", signature)
    other = generate(tmp_path / "other.key")
    with pytest.raises(SignatureInvalid):
        verify((tmp_path / "other.key.pub").read_bytes(), b"sha256:abc", signature)
    assert fingerprint(public).startswith("SHA256:") and fingerprint(public).count(":") == 16
    assert fingerprint(public) != fingerprint((tmp_path / "other.key.pub").read_bytes())
    with pytest.raises(ConfigurationError, match="already exists"):
        generate(tmp_path / "site.key")
    (tmp_path / "site.key").chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load(tmp_path / "site.key")
    assert other is not None


def test_a_signed_version_refuses_any_changed_byte(tmp_path: Path) -> None:
    hub = generate(tmp_path / "hub.key")
    hub_public = (tmp_path / "hub.key.pub").read_bytes()
    files = {"site.py": b"def count(cohort):\n    return len(cohort)\n", "README": b"count\n"}
    manifest = FlowVersion(name="federated-cohort-count", label="1",
                           site_entrypoint="site.py:count", plugins={"radflow": "0.1.0"},
                           release_schema=SCHEMA, files=file_hashes(files), publisher="hub")
    signed = sign_version(manifest, hub)
    assert verify_version(signed, hub_public, files) == manifest.content_hash()
    wire = SignedVersion.model_validate_json(signed.model_dump_json())  # as a site receives it
    assert verify_version(wire, hub_public, files) == signed.hash

    one_byte = dict(files, **{"site.py": files["site.py"].replace(b"len", b"LEN")})
    with pytest.raises(SignatureInvalid, match="files"):
        verify_version(signed, hub_public, one_byte)
    with pytest.raises(SignatureInvalid, match="files"):
        verify_version(signed, hub_public, files | {"extra.py": b""})
    loosened = copy.deepcopy(signed)
    loosened.manifest.release_schema.fields["vendor"] = ReleaseField(kind="enum",
                                                                      values=("anything",))
    with pytest.raises(SignatureInvalid, match="signed hash"):
        verify_version(loosened, hub_public, files)
    rehashed = loosened.model_copy(update={"hash": loosened.manifest.content_hash()})
    with pytest.raises(SignatureInvalid, match="pinned key"):
        verify_version(rehashed, hub_public, files)  # a new hash needs the hub's signature

    assert missing_plugins(manifest) == []  # radflow 0.1.0 is installed
    needs = manifest.model_copy(update={"plugins": {"radflow": "9.9", "radflow-none": "1"}})
    assert missing_plugins(needs) == ["missing_plugin:radflow@9.9",
                                      "missing_plugin:radflow-none@1"]



def test_a_version_states_the_radflow_and_plugin_versions_it_needs(tmp_path: Path) -> None:
    """``requires`` is checked against what is installed (or a site's report): a site below it
    gets the refusal ``unsupported_version:<distribution>`` with what to install; a manifest with
    a field this radflow does not know is refused whole; a version without ``requires`` hashes
    as published (one from before the field existed still verifies)."""
    from pydantic import ValidationError

    from radflow.federation.manifest import unmet_requirements
    from radflow.hashing import digest

    base = FlowVersion(name="federated-cohort-count", site_entrypoint="site.py:count",
                       release_schema=SCHEMA)
    # a version published before `requires` existed (its JSON has no such key) still verifies:
    # the hash covers the manifest as published
    hub = generate(tmp_path / "hub.key")
    before_requires = {k: v for k, v in base.model_dump(mode="json").items() if k != "requires"}
    old_hash = digest(before_requires)
    wire = {"manifest": before_requires, "hash": old_hash,
            "signature": sign(hub, old_hash.encode())}
    assert verify_version(SignedVersion.from_wire(wire), (tmp_path / "hub.key.pub").read_bytes(),
                          None) == old_hash
    # and one published now verifies as the hub stores it (its JSON, `requires` and all)
    signed = sign_version(base, hub)
    stored = json.loads(signed.model_dump_json())
    assert verify_version(SignedVersion.from_wire(stored),
                          (tmp_path / "hub.key.pub").read_bytes()) == signed.hash
    needs = base.model_copy(update={"requires": {"radflow": ">=0.1", "Radflow_NNUnet": ">=0.1,<9",
                                                 "radflow-none": ">=1"}})
    assert needs.content_hash() != base.content_hash()
    (unmet,) = unmet_requirements(needs)  # radflow and radflow-nnunet 0.1.0 are installed here
    assert (unmet.refusal, unmet.has) == ("unsupported_version:radflow-none", None)
    assert "pip install 'radflow-none>=1'" in unmet.fix
    too_old = unmet_requirements(needs.model_copy(update={"requires": {"radflow": ">=0.2"}}),
                                 {"radflow": "0.2.0.dev3"})  # a pre-release is below 0.2
    assert [(u.refusal, u.needs, u.has) for u in too_old] == [
        ("unsupported_version:radflow", ">=0.2", "0.2.0.dev3")]
    assert unmet_requirements(needs, {"radflow": "0.1.5", "radflow-nnunet": "1.0",
                                      "radflow-none": "2"}) == []
    assert unmet_requirements(needs, {"radflow": "0.1.5", "radflow-nnunet": "not-a-version",
                                      "radflow-none": "2"})[0].distribution == "Radflow_NNUnet"
    with pytest.raises(ValidationError, match="not a version specifier"):
        FlowVersion.model_validate(base.model_dump() | {"requires": {"radflow": "newest"}})
    with pytest.raises(ValidationError, match="extra"):  # e.g. a newer radflow's field
        FlowVersion.model_validate(base.model_dump() | {"min_sites": 3})

ROUNDS = ReleaseSchema.model_validate({"rounds": {
    "span": {"fields": {"n": {"kind": "count"},
                        "span_low": {"kind": "coarse", "shape": []},
                        "span_high": {"kind": "coarse"}}},
    "histogram": {"fields": {
        "n": {"kind": "count"},
        "cells": {"kind": "histogram", "shape": ["features", "bins"]},
        "sums": {"kind": "matrix", "shape": ["features", "bins"], "counted_by": "cells"}}},
}})


def test_rounds_named_dimensions_coarse_spans_and_counted_sums() -> None:
    policy = SitePolicy(min_cohort=10, min_cell=5)
    span = {"n": 30, "span_low": 12.0, "span_high": 99.0}
    assert gate(span, ROUNDS, policy, {"round": "span"}).released == span
    assert gate(span | {"span_high": 98.76}, ROUNDS, policy,
                {"round": "span"}).refusal == "policy_violation:coarse"  # a raw value
    assert gate(span, ROUNDS, policy, {"round": "other"}).refusal == "policy_violation:schema"
    assert gate(span, ROUNDS, policy, {}).refusal == "policy_violation:schema"  # no round

    params = {"round": "histogram", "features": ["a", "b"], "bins": 3}
    body = {"n": 30, "cells": [[10, 3, 17], [0, 12, 18]],
            "sums": [[1.5, 2.5, 3.5], [0.0, 4.5, 5.5]]}
    out = gate(body, ROUNDS, policy, params)
    assert out.ok
    # the 3 is suppressed, and with it the smallest other non-zero cell of its row (10):
    # their sums go too (a sum over three values is too close to the values)
    assert out.released["cells"] == [[None, None, 17], [0, 12, 18]]
    assert out.released["sums"] == [[None, None, 3.5], [0.0, 4.5, 5.5]]
    assert out.suppressed == ["cells[0][0]", "cells[0][1]"]
    assert gate(body, ROUNDS, policy, params | {"bins": 4}).refusal == "policy_violation:shape"
    assert gate(body, ROUNDS, policy, {"round": "histogram"}).refusal == \
        "policy_violation:shape"  # nothing sizes the arrays


def test_models_too_large_for_the_sites_n_are_refused() -> None:
    schema = ReleaseSchema(parameters_field="gradient", fields={
        "n": ReleaseField(kind="count"),
        "gradient": ReleaseField(kind="matrix", shape=("parameters",))})
    policy = SitePolicy(min_cohort=10)  # max_parameters_ratio 0.33 (DataSHIELD's glm rule)
    body = {"n": 30, "gradient": [0.1] * 10}
    assert gate(body, schema, policy, {"parameters": 10}).refusal == \
        "policy_violation:parameters"  # 10 > 0.33 * 30
    small = {"n": 30, "gradient": [0.1] * 9}
    assert gate(small, schema, policy, {"parameters": 9}).ok
    with pytest.raises(ValueError, match="same shape"):
        ReleaseSchema.model_validate({"fields": {
            "n": {"kind": "count"}, "s": {"kind": "sum", "counted_by": "n"}}})


def test_the_parameters_rule_counts_the_signed_schemas_field_not_the_job() -> None:
    """The number of parameters is the length of the field the signed schema names, whatever
    a job's parameters say: a hub that sends a small ``parameters`` (or none, or one that is
    not a number) does not lift the rule."""
    schema = ReleaseSchema(parameters_field="weights", fields={
        "n": ReleaseField(kind="count"),
        "weights": ReleaseField(kind="matrix", shape=("terms", 2))})
    policy = SitePolicy(min_cohort=10)
    body = {"n": 30, "weights": [[0.1, 0.2]] * 6}  # 12 parameters > 0.33 * 30
    for lie in ({}, {"parameters": 1}, {"parameters": "few"}, {"parameters": True}):
        assert gate(body, schema, policy, {"terms": list("abcdef")} | lie).refusal == \
            "policy_violation:parameters", lie
    assert gate({"n": 40, "weights": [[0.1, 0.2]] * 6}, schema, policy,
                {"terms": list("abcdef")}).ok  # 12 <= 0.33 * 40
    no_model = ReleaseSchema(fields=schema.fields)  # no parameters_field: no such rule
    assert gate(body, no_model, policy, {"terms": list("abcdef"), "parameters": 99}).ok
    with pytest.raises(ValueError, match="parameters_field"):
        ReleaseSchema(parameters_field="n", fields=schema.fields)  # a count is no model
    with pytest.raises(ValueError, match="parameters_field"):
        ReleaseSchema(parameters_field="nothing", fields=schema.fields)
    from radflow.federation.bundle import build

    logistic, _ = build(REPO / "federation/flows/federated-logistic-regression", "test@hub")
    assert logistic.release_schema.parameters_field == "gradient"  # signed with the version


@pytest.mark.parametrize(("kind", "shape", "value"), [
    ("matrix", (12,), [0.5] * 12),                       # as many rows as cases
    ("matrix", (2, 12), [[0.5] * 12] * 2),               # or columns: any dimension
    ("weights", (3, 12), encode(np.full((3, 12), 0.5))),  # weights: encoded (weights.py)
    ("histogram", (12,), [1] * 12),                      # a histogram of one case per bin
    ("coarse", (12,), [1.0] * 12),                       # rounded per-case values
])
def test_per_case_arrays_of_every_kind_are_refused(kind: str, shape: tuple, value: list) -> None:
    extra = {"counted_by": "cells"} if kind == "coarse" else {}
    fields = {"n": ReleaseField(kind="count"), "x": ReleaseField(kind=kind, shape=shape, **extra)}
    if extra:
        fields["cells"] = ReleaseField(kind="histogram", shape=shape)
    schema = ReleaseSchema(fields=fields)
    policy = SitePolicy(min_cohort=10, min_cell=1, allow_weights=True)
    body = {"n": 12, "x": value} | ({"cells": [1] * 12} if extra else {})
    assert gate(body, schema, policy).refusal == "policy_violation:per_case"
    # a dimension a job parameter sizes is the coordinator's choice, not the data's
    named = tuple("k" if d == 12 else d for d in shape)
    fields = {"n": ReleaseField(kind="count"), "x": ReleaseField(kind=kind, shape=named,
                                                                  **extra)}
    if extra:
        fields["cells"] = ReleaseField(kind="histogram", shape=named)
    assert gate(body, ReleaseSchema(fields=fields), policy, {"k": 12}).ok


def test_coarse_arrays_are_counted_and_numbers_are_json_exact() -> None:
    with pytest.raises(ValueError, match="counted_by"):
        ReleaseSchema(fields={"n": ReleaseField(kind="count"),
                              "low": ReleaseField(kind="coarse", shape=("features",))})
    ReleaseSchema(fields={"n": ReleaseField(kind="count"), "low": ReleaseField(kind="coarse")})
    policy = SitePolicy()
    assert gate(release(contrast=2**60), SCHEMA, policy).refusal == "policy_violation:schema"
    assert gate(release(volume_sum=10**400), SCHEMA, policy).refusal == \
        "policy_violation:schema"  # no crash on an integer no float holds
    assert gate(release(volume_sum=float("inf")), SCHEMA, policy).refusal == \
        "policy_violation:schema"
    assert gate(release(hu_histogram=[0, 9, 12, 11, 6, None]), SCHEMA, policy).refusal == \
        "policy_violation:schema"  # None is what the gate writes, never what it takes


def test_the_structural_check_of_a_released_release() -> None:
    """What the hub runs on a posted release: None only where the gate suppresses (a count,
    a histogram cell, a value counted by a suppressed cell), the cohort size always there."""
    out = gate(release(contrast=3), SCHEMA, SitePolicy())
    assert check_release(out.released, SCHEMA, released=True).n == 40
    with pytest.raises(Refused, match="schema") as bad:
        check_release(out.released | {"n": None}, SCHEMA, released=True)
    assert bad.value.field == "n" and bad.value.reason() == "schema (field n)"
    with pytest.raises(Refused, match="schema"):
        check_release(out.released | {"volume_sum": None}, SCHEMA, released=True)
    with pytest.raises(Refused, match="schema"):
        check_release(out.released, SCHEMA)  # before the gate, no None anywhere
    params = {"round": "histogram", "features": ["a", "b"], "bins": 3}
    body = {"n": 30, "cells": [[10, 3, 17], [0, 12, 18]],
            "sums": [[1.5, 2.5, 3.5], [0.0, 4.5, 5.5]]}
    done = gate(body, ROUNDS, SitePolicy(min_cohort=10, min_cell=5), params).released
    assert check_release(done, ROUNDS, params, released=True).values == done
    unblanked = copy.deepcopy(done)
    unblanked["sums"][0][0] = 1.5  # a sum whose count was suppressed: not through the gate
    with pytest.raises(Refused, match="schema"):
        check_release(unblanked, ROUNDS, params, released=True)
    blanked = copy.deepcopy(done)
    blanked["sums"][1][2] = None  # a sum missing where its count is there
    with pytest.raises(Refused, match="schema"):
        check_release(blanked, ROUNDS, params, released=True)
    with pytest.raises(Refused, match="shape") as deep:
        check_release(done | {"sums": [[[1.0]] * 3] * 2}, ROUNDS, params, released=True)
    assert deep.value.reason() == "shape (field sums)"


def test_a_small_count_that_other_fields_reveal_refuses_the_release() -> None:
    schema = ReleaseSchema.model_validate({"fields": {
        "n": {"kind": "count"}, "events": {"kind": "count", "small": "refuse"},
        "gradient": {"kind": "matrix", "shape": [2]}}})
    policy = SitePolicy(min_cohort=10, min_cell=5)
    assert gate({"n": 30, "events": 4, "gradient": [0.1, 0.2]}, schema, policy).refusal == \
        "policy_violation:min_cell"
    assert gate({"n": 30, "events": 0, "gradient": [0.1, 0.2]}, schema, policy).refusal == \
        "policy_violation:min_cell"  # no event at all is as telling
    assert gate({"n": 30, "events": 5, "gradient": [0.1, 0.2]}, schema, policy).ok


def test_a_version_is_verified_as_published_not_as_parsed(tmp_path: Path) -> None:
    """The hash covers the manifest's JSON as the hub published it: a site whose radflow knows
    more fields (with defaults) than the hub's still verifies it; a manifest with a field this
    radflow does not know is refused as unreadable, not silently half-understood."""
    import json

    from radflow.federation.signing import sign as sign_bytes
    from radflow.hashing import digest

    hub = generate(tmp_path / "hub.key")
    hub_public = (tmp_path / "hub.key.pub").read_bytes()
    files = {"site.py": b"def count(cohort):\n    return 1\n"}
    manifest = FlowVersion(name="federated-cohort-count", site_entrypoint="site.py:count",
                           release_schema=SCHEMA, files=file_hashes(files), publisher="hub")
    older = json.loads(manifest.model_dump_json())  # as an older hub, without newer defaults
    for spec in older["release_schema"]["fields"].values():
        spec.pop("small"), spec.pop("counted_by")
    older["release_schema"].pop("rounds")
    wire = {"manifest": older, "hash": digest(older),
            "signature": sign_bytes(hub, digest(older).encode())}
    assert verify_version(SignedVersion.from_wire(wire), hub_public, files) == digest(older)
    newer = copy.deepcopy(older)
    newer["release_schema"]["fields"]["n"]["noise"] = "laplace"  # a rule this radflow lacks
    with pytest.raises(ValueError, match="noise"):
        SignedVersion.from_wire({**wire, "manifest": newer})
