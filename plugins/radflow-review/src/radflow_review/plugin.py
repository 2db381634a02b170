"""The review plugin's declaration (entry point ``radflow.plugins: review``): the ``review``
step, and the review keeper, a site component that expires and reminds. The step and the web
pages are named, not imported: discovering plugins stays light (no Prefect import)."""

from __future__ import annotations

from radflow.plugins import Plugin, distribution_version
from radflow.site.components import ServiceComponent


class ReviewKeeperComponent(ServiceComponent):
    """Expires reviews past their due time and reminds their assignees."""

    name = "reviews"
    module = "radflow_review.keeper"
    depends_on = ("prefect-server",)


plugin = Plugin(
    name="review",
    version=distribution_version("radflow-review"),
    description="Review steps: a clinician accepts, rejects or corrects a segmentation",
    steps={"review": "radflow_review.step:review"},
    components=(ReviewKeeperComponent(),),
    web=("radflow_review.web:pages", "radflow_review.views:pages"),
)
