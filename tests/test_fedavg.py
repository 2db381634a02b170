"""FedAvg's math (weighted by cases, update-norm clipping) by hand-computed values; model weights
in a release (fp16, encoded, never a JSON list): the round trip, every refusal of a malformed
value, the gate (weights only where allowed, never counted by max_parameters_ratio) and the
bytes a release costs on the wire."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from radflow.errors import FederationError
from radflow.federation.egress import gate
from radflow.federation.fedavg import SiteWeights, clip_update, fedavg
from radflow.federation.policy import SitePolicy
from radflow.federation.release import MAX_WEIGHT_VALUES, ReleaseField, ReleaseSchema
from radflow.federation.structure import Refused, check_release
from radflow.federation.weights import (
    check_encoded,
    checkpoint_bytes,
    decode,
    encode,
    flatten,
    layout_of,
    parameter_count,
    unflatten,
    wire_bytes,
)

F16 = ("float16",)


def test_fedavg_weights_by_cases_trained() -> None:
    g = np.zeros(3, np.float32)
    a = np.array([1.0, 2.0, 3.0], np.float16)
    b = np.array([4.0, 5.0, 6.0], np.float16)
    result = fedavg(g, [SiteWeights("a", a, 1), SiteWeights("b", b, 3)])
    # (1 * [1, 2, 3] + 3 * [4, 5, 6]) / 4
    np.testing.assert_allclose(result.weights, [3.25, 4.25, 5.25])
    assert result.weights.dtype == np.float32 and result.total_cases == 4
    assert [round(n.norm, 5) for n in result.norms] == [round(14 ** 0.5, 5), round(77 ** 0.5, 5)]
    assert not any(n.clipped for n in result.norms)


def test_updates_are_clipped_before_averaging() -> None:
    g = np.array([1.0, 1.0], np.float32)
    a = np.array([4.0, 5.0], np.float16)    # update (3, 4): norm 5 -> clipped to (0.6, 0.8)
    b = np.array([1.5, 1.0], np.float16)    # update (0.5, 0): norm 0.5, under the clip
    result = fedavg(g, [SiteWeights("a", a, 2), SiteWeights("b", b, 2)], clip_norm=1.0)
    # 1 + (2 * (0.6, 0.8) + 2 * (0.5, 0)) / 4 = (1.55, 1.4)
    np.testing.assert_allclose(result.weights, [1.55, 1.4], rtol=1e-6)
    a_norm, b_norm = result.norms
    assert (a_norm.site, a_norm.norm, a_norm.clipped) == ("a", 5.0, True)
    assert a_norm.clipped_norm == pytest.approx(1.0)
    assert (b_norm.norm, b_norm.clipped_norm, b_norm.clipped) == (0.5, 0.5, False)
    unclipped = fedavg(g, [SiteWeights("a", a, 2), SiteWeights("b", b, 2)])
    np.testing.assert_allclose(unclipped.weights, [2.75, 3.0])
    clipped, before, after = clip_update(np.array([0.0, 3.0, 4.0], np.float32), 2.5)
    np.testing.assert_allclose(clipped, [0.0, 1.5, 2.0])
    assert (before, after) == (5.0, pytest.approx(2.5))


@pytest.mark.parametrize(("sites", "clip", "match"), [
    ([], None, "no site"),
    ([SiteWeights("a", np.ones(3), 0)], None, "0 cases"),
    ([SiteWeights("a", np.ones(3), True)], None, "True cases"),
    ([SiteWeights("a", np.ones(4), 2)], None, "the global model has"),
    ([SiteWeights("a", np.ones(3), 2), SiteWeights("a", np.ones(3), 2)], None, "twice"),
    ([SiteWeights("a", np.array([1.0, np.nan, 0.0]), 2)], None, "not finite"),
    ([SiteWeights("a", np.ones(3), 2)], -1.0, "clip_norm"),
    ([SiteWeights("a", np.ones(3), 2)], float("inf"), "clip_norm"),
])
def test_fedavg_refuses_bad_input(sites, clip, match) -> None:
    with pytest.raises(FederationError, match=match):
        fedavg(np.zeros(3, np.float32), sites, clip_norm=clip)


def test_weights_round_trip_through_a_layout() -> None:
    rng = np.random.default_rng(1)
    state = {"conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
             "conv.bias": rng.normal(size=(4,)).astype(np.float32)}
    layout = layout_of(state)
    assert layout == [("conv.weight", (4, 1, 3, 3)), ("conv.bias", (4,))]
    assert parameter_count(layout) == 40
    value = encode(flatten(state, layout))
    assert set(value) == {"dtype", "shape", "sha256", "data"} and value["shape"] == [40]
    vector = check_encoded(value, (40,), F16)
    assert vector.dtype == np.float16 and np.array_equal(vector, decode(value))
    back = unflatten(vector, layout)
    for name, array in state.items():  # fp16: about three significant digits
        np.testing.assert_allclose(back[name], array, rtol=1e-3, atol=1e-3)
        assert back[name].dtype == np.float32
    with pytest.raises(FederationError, match="layout"):
        flatten({"conv.weight": state["conv.weight"]}, layout)
    with pytest.raises(FederationError, match="layout"):
        unflatten(vector[:39], layout)
    with pytest.raises(FederationError, match="fp16"):
        encode(np.array([1e6]))
    with pytest.raises(FederationError, match="NaN"):
        encode(np.array([np.nan]))


def _recode(value: dict, raw: bytes, rehash: bool = True) -> dict:
    return value | {"data": base64.b64encode(raw).decode()} | (
        {"sha256": hashlib.sha256(raw).hexdigest()} if rehash else {})


def _malformed() -> list[tuple[object, str]]:
    good = encode(np.arange(6, dtype=np.float32))
    raw = base64.b64decode(good["data"])
    nan = np.frombuffer(raw, np.float16).copy()
    nan[2] = np.nan
    return [
        ([0.0] * 6, "schema"),                                         # a JSON list: no longer
        (good | {"extra": 1}, "schema"),
        ({k: v for k, v in good.items() if k != "sha256"}, "schema"),
        (good | {"dtype": "float32"}, "schema"),                         # an undeclared dtype
        (good | {"dtype": "uint32"}, "schema"),                          # not declared here
        (good | {"shape": [5]}, "shape"),
        (good | {"shape": [2, 3]}, "shape"),
        (good | {"shape": [True] * 6}, "shape"),
        (_recode(good, raw[:-2]), "shape"),                               # one value short
        (_recode(good, raw + raw[:2]), "shape"),                          # one value more
        (_recode(good, nan.tobytes()), "schema"),                         # NaN
        (_recode(good, raw[::-1], rehash=False), "schema"),               # hash mismatch
        (good | {"sha256": "0" * 63}, "schema"),
        (good | {"data": "!" * len(good["data"])}, "schema"),             # not base64
        (good | {"data": 12}, "shape"),
    ]


@pytest.mark.parametrize(("value", "rule"), _malformed())
def test_every_malformed_weights_value_is_refused(value, rule) -> None:
    with pytest.raises(Refused) as refused:
        check_encoded(value, (6,), F16)
    assert refused.value.rule == rule


def test_weights_size_caps() -> None:
    with pytest.raises(Refused) as refused:  # the shape is checked before anything is decoded
        check_encoded({"dtype": "float16", "shape": [MAX_WEIGHT_VALUES + 1], "sha256": "0" * 64,
                       "data": ""}, (MAX_WEIGHT_VALUES + 1,), F16)
    assert refused.value.rule == "shape"
    field = ReleaseField(kind="weights", shape=("parameters",))
    assert field.resolved({"parameters": 1_400_000}) == (1_400_000,)  # over matrix's 100000
    with pytest.raises(ValueError, match=str(MAX_WEIGHT_VALUES)):
        field.resolved({"parameters": MAX_WEIGHT_VALUES + 1})
    with pytest.raises(ValueError, match="at most"):  # the values, not only each dimension
        ReleaseField(kind="weights", shape=("a", "b")).resolved({"a": 5000, "b": 5000})
    with pytest.raises(ValueError, match="100000"):
        ReleaseField(kind="matrix", shape=("k",)).resolved({"k": 1_400_000})
    with pytest.raises(ValueError, match="dtypes"):
        ReleaseField(kind="matrix", shape=(2,), dtypes=("float16",))


SCHEMA = ReleaseSchema(fields={
    "n": ReleaseField(kind="count"),
    "cases_trained": ReleaseField(kind="count", small="refuse"),
    "weights": ReleaseField(kind="weights", shape=("parameters",))})


def test_the_gate_passes_weights_only_where_allowed_and_never_counts_them() -> None:
    params = {"parameters": 50_000}
    body = {"n": 12, "cases_trained": 12, "weights": encode(np.zeros(50_000, np.float32))}
    assert gate(body, SCHEMA, SitePolicy(), params).refusal == "policy_violation:weights"
    allowed = SitePolicy(allow_weights=True)  # max_parameters_ratio 0.33: 50000 >> 0.33 * 12
    result = gate(body, SCHEMA, allowed, params)
    assert result.ok and result.released["weights"] == body["weights"]
    checked = check_release(result.released, SCHEMA, params, released=True)  # the hub's check
    assert np.array_equal(decode(checked.values["weights"]), np.zeros(50_000, np.float16))
    assert gate(body, SCHEMA, allowed, {"parameters": 49_999}).refusal == \
        "policy_violation:shape"
    assert gate(body | {"weights": [0.0] * 50_000}, SCHEMA, allowed, params).refusal == \
        "policy_violation:schema"
    masked = body | {"weights": encode(np.zeros(50_000, np.uint32), "uint32")}
    assert gate(masked, SCHEMA, allowed, params).refusal == "policy_violation:schema"
    secure = ReleaseSchema(fields=SCHEMA.fields | {"weights": ReleaseField(
        kind="weights", shape=("parameters",), dtypes=("uint32",))})
    assert gate(masked, secure, allowed, params).ok
    with pytest.raises(ValueError, match="not a matrix field"):  # weights are never counted
        ReleaseSchema(parameters_field="weights", fields=SCHEMA.fields)
    described = SCHEMA.json_schema()["properties"]["weights"]
    assert described["x-radflow-kind"] == "weights" and described["type"] == "object"


def test_bytes_on_the_wire_against_a_full_checkpoint() -> None:
    parameters = 1_400_000
    release = {"n": 30, "cases_trained": 30,
               "weights": encode(np.zeros(parameters, np.float32))}
    size = wire_bytes(release)
    assert size == len(json.dumps({"release": release}).encode())
    assert 4 / 3 * 2 * parameters < size < 4 / 3 * 2 * parameters + 300  # fp16 in base64
    assert checkpoint_bytes(parameters) == 16_800_000  # fp32 weights + Adam's two moments
    assert checkpoint_bytes(parameters) / size > 4
