"""The hub (phase 6): the federation API where sites enrol, get short-lived tokens with
``private_key_jwt`` client credentials, and (to come) fetch jobs and post releases.

Built so far: the site registry with one-time enrolment codes, the token endpoint, bearer-token
checks scoped to one site, and revocation. Still to come (issue 10): `radflow hub up` with the
hub's own Prefect server and worker, jobs, versions, the site agent and the first study.
"""
