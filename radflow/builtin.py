"""radflow's own contributions, declared as a plugin (entry point ``radflow.plugins: core``)
exactly as a third-party plugin declares its own: the ingest flow and the segment-and-quantify
flows, deployed on every site, and the site's web app with its embedded OpenID provider."""

from __future__ import annotations

from radflow import __version__
from radflow.deployments import CORE_DEPLOYMENTS
from radflow.plugins.spec import Plugin
from radflow.site.components import ServiceComponent
from radflow.web.component import WorklistComponent
from radflow.web.idp import IdpComponent


class AgentComponent(ServiceComponent):
    """The site agent (phase 6): runs once the site has joined a hub."""

    name = "agent"
    module = "radflow.federation.agent"
    depends_on = ("prefect-server", "worker")
    stale_after = 60.0  # a long poll holds a tick for up to 20 s

    def enabled(self, ctx) -> bool:
        """A site that joined a hub runs an agent, unless it joined by file (never online)."""
        from radflow.federation.offline import is_offline

        return (ctx.paths.root / "federation" / "hub.json").exists() and \
            not is_offline(ctx.paths.root)


plugin = Plugin(
    name="core",
    version=__version__,
    description="radflow's own flows: ingest, segment-and-quantify (cohort fan-out and case)",
    deployments=CORE_DEPLOYMENTS,
    components=(IdpComponent(), WorklistComponent(), AgentComponent()),
    web=("radflow.explore.web:pages", "radflow.federation.web:pages"),  # imported when served
)
