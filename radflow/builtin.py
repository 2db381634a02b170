"""radflow's own contributions, declared as a plugin (entry point ``radflow.plugins: core``)
exactly as a third-party plugin declares its own: the ingest flow and the segment-and-quantify
flows, deployed on every site, and the site's web app with its embedded OpenID provider."""

from __future__ import annotations

from radflow import __version__
from radflow.deployments import CORE_DEPLOYMENTS
from radflow.plugins.spec import Plugin
from radflow.web.component import WorklistComponent
from radflow.web.idp import IdpComponent

plugin = Plugin(
    name="core",
    version=__version__,
    description="radflow's own flows: ingest, segment-and-quantify (cohort fan-out and case)",
    deployments=CORE_DEPLOYMENTS,
    components=(IdpComponent(), WorklistComponent()),
)
