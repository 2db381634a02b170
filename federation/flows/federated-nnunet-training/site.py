"""The site part of federated-nnunet-training: the round the hub names, at this site
(radflow_nnunet.federated.study_site: fingerprint, train, validate)."""

from __future__ import annotations

from typing import Any


def training_round(site: str | None = None, study: str | None = None,
                   **params: Any) -> dict[str, Any]:
    from radflow_nnunet.federated.study_site import run_round

    return run_round(params, site=site, study=study)
