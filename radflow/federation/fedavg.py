"""Federated averaging (FedAvg) of flat weight vectors, weighted by the cases each site trained,
with update-norm clipping.

    result = fedavg(global_weights, [SiteWeights("a", w_a, 12), SiteWeights("b", w_b, 30)],
                    clip_norm=5.0)
    result.weights          # the new global vector, float32 (the hub keeps it in float32)
    result.norms            # per site: the update's L2 norm before and after clipping

Each site's update is its weights minus the global weights it started from. With a clip norm
C (a study parameter; None: no clipping) an update whose L2 norm exceeds C is scaled down to
norm C, before averaging. The new global vector is

    global + sum_i(cases_i * clipped_update_i) / sum_i(cases_i)

which, without clipping, is the cases-weighted mean of the sites' weights. Sites send fp16
(:mod:`radflow.federation.weights`); the math here is float32 (norms accumulated in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radflow.errors import FederationError


@dataclass(frozen=True)
class SiteWeights:
    """One site's released weights (any float dtype, fp16 on the wire) and its count of cases
    actually trained."""

    site: str
    weights: np.ndarray
    cases: int


@dataclass(frozen=True)
class SiteNorm:
    """A site's update norm for the round's report: before and after clipping."""

    site: str
    cases: int
    norm: float
    clipped_norm: float

    @property
    def clipped(self) -> bool:
        return self.clipped_norm < self.norm


@dataclass(frozen=True)
class FedAvgResult:
    """The new global vector (float32), the per-site norms and the total cases."""

    weights: np.ndarray
    norms: list[SiteNorm]
    total_cases: int


def clip_update(update: np.ndarray, clip_norm: float | None) -> tuple[np.ndarray, float, float]:
    """``update`` scaled to an L2 norm of at most ``clip_norm`` (None: unchanged), with its norm
    before and after.

    Raises:
        FederationError: a clip norm that is not a positive finite number.
    """
    check_clip_norm(clip_norm)
    norm = float(np.linalg.norm(update.astype(np.float64, copy=False)))
    if clip_norm is None or norm <= clip_norm:
        return update, norm, norm
    scale = np.float32(clip_norm / norm)
    clipped = update * scale
    return clipped, norm, float(np.linalg.norm(clipped.astype(np.float64)))


def check_clip_norm(clip_norm: float | None) -> None:
    """Raises FederationError for a clip norm that is neither None nor positive and finite."""
    if clip_norm is None:
        return
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, int | float) or \
            not np.isfinite(clip_norm) or clip_norm <= 0:
        raise FederationError(f"clip_norm {clip_norm!r} is not a positive number",
                              fix="set the study's clip_norm to a positive number, or leave "
                                  "it out for no clipping")


def site_update(global_weights: np.ndarray, weights: np.ndarray, site: str = "") -> np.ndarray:
    """A site's update (its weights minus the global weights), float32.

    Raises:
        FederationError: shapes differ, or a value is not finite.
    """
    theirs = np.asarray(weights)
    if theirs.shape != np.shape(global_weights):
        raise FederationError(f"site {site!r} sent {theirs.shape} weights, the global model has "
                              f"{np.shape(global_weights)}",
                              fix="the site trained another plan: check the study's plan")
    update = theirs.astype(np.float32) - np.asarray(global_weights, dtype=np.float32)
    if not np.isfinite(update).all():
        raise FederationError(f"site {site!r} sent weights that are not finite",
                              fix="leave the site out of this round")
    return update


def check_cases(site: str, cases: object) -> int:
    """A site's count of cases trained, a positive integer.

    Raises:
        FederationError: anything else.
    """
    if isinstance(cases, bool) or not isinstance(cases, int | np.integer) or cases < 1:
        raise FederationError(f"site {site!r} reports {cases!r} cases trained",
                              fix="a site that trained no case releases nothing this round")
    return int(cases)


def fedavg(global_weights: np.ndarray, sites: Sequence[SiteWeights],
           clip_norm: float | None = None) -> FedAvgResult:
    """The cases-weighted average of the sites' clipped updates, added to ``global_weights``.

    Raises:
        FederationError: no site, a site twice, a bad count of cases, a shape that differs,
            values that are not finite, or a bad clip norm.
    """
    check_clip_norm(clip_norm)
    if not sites:
        raise FederationError("no site released weights this round",
                              fix="wait for the quorum, or end the study")
    names = [s.site for s in sites]
    if len(set(names)) != len(names):
        raise FederationError(f"a site appears twice among {sorted(names)}",
                              fix="combine one release per site")
    base = np.asarray(global_weights, dtype=np.float32)
    total = np.zeros_like(base)
    norms, cases_sum = [], 0
    for s in sites:
        cases = check_cases(s.site, s.cases)
        clipped, before, after = clip_update(site_update(base, s.weights, s.site), clip_norm)
        total += clipped * np.float32(cases)
        cases_sum += cases
        norms.append(SiteNorm(s.site, cases, before, after))
    return FedAvgResult(base + total / np.float32(cases_sum), norms, cases_sum)
