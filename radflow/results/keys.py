"""The key of a derived result: what determines it, hashed canonically."""

from __future__ import annotations

from dataclasses import dataclass, replace

from radflow.enums import ResultKind
from radflow.hashing import digest
from radflow.uids import derived_uid

LEGACY_PARAMS = "legacy"  # results recorded before keys existed (catalog revision 0001)


@dataclass(frozen=True)
class ResultKey:
    """Everything that determines a derived result.

    Attributes:
        kind: what it is (SEG, SR, ...).
        inputs: the UIDs it was made from, in order (the source series' SeriesInstanceUID, then
            e.g. the SOPInstanceUID of the SEG an SR quantifies).
        algorithm: the algorithm's name (a model name, ``pyradiomics``).
        version: the algorithm's version.
        params_hash: hash of the parameters that change its output.
        generation: 0, or how many times it was recomputed by force (``--force``): each
            generation has its own digest, so its own UIDs, and is a new object in Orthanc.
    """

    kind: ResultKind
    inputs: tuple[str, ...]
    algorithm: str
    version: str
    params_hash: str = ""
    generation: int = 0

    @property
    def digest(self) -> str:
        """``sha256:...`` of the canonical key (the ``result.key`` column)."""
        return result_key(self.kind, list(self.inputs), self.algorithm, self.version,
                          self.params_hash, self.generation)

    def next_generation(self) -> ResultKey:
        """The key of a recomputation by force: same inputs, new digest and UIDs."""
        return replace(self, generation=self.generation + 1)

    def uid(self, *role: str) -> str:
        """A deterministic UID for a part of this result (``uid("series")``, ``uid("segment",
        "1")``): the same key gives the same UIDs on every run."""
        return derived_uid(self.digest, *role)

    @property
    def series_uid(self) -> str:
        return self.uid("series")

    @property
    def instance_uid(self) -> str:
        return self.uid("instance")


def result_key(kind: str, inputs: list[str], algorithm: str, version: str, params: str,
               generation: int = 0) -> str:
    """The canonical hash of a result key (also frozen into catalog migration 0002, where
    every key is of generation 0: a generation appears in the hash only from 1 on)."""
    content = {"algorithm": algorithm, "inputs": list(inputs), "kind": str(kind),
               "params": params, "version": version}
    if generation:
        content["generation"] = generation
    return digest(content)
