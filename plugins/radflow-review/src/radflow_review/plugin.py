"""The review plugin's declaration (entry point ``radflow.plugins: review``): the ``review``
step, and the review keeper, a site component that expires and reminds."""

from __future__ import annotations

from radflow.plugins import Plugin, distribution_version
from radflow.site.components import ServiceComponent
from radflow_review.step import review
from radflow_review.web import pages


class ReviewKeeperComponent(ServiceComponent):
    """Expires reviews past their due time and reminds their assignees."""

    name = "reviews"
    module = "radflow_review.keeper"
    depends_on = ("prefect-server",)


plugin = Plugin(
    name="review",
    version=distribution_version("radflow-review"),
    description="Review steps: a clinician accepts, rejects or corrects a segmentation",
    steps={"review": review},
    components=(ReviewKeeperComponent(),),
    web=(pages(),),
)
