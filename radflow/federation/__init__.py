"""Federation (phase 6), the parts every site and the hub share: what a flow version's site part
may release (:mod:`~radflow.federation.release`), the site's own policy
(:mod:`~radflow.federation.policy`), the egress gate that enforces both on every release
(:mod:`~radflow.federation.egress`), Ed25519 signing (:mod:`~radflow.federation.signing`) and the
``FlowVersion`` manifest (:mod:`~radflow.federation.manifest`).

Still to come (issue 10): the hub, enrolment, the site agent, bundles and the first study.
"""
