"""The one typed way radflow reaches a Prefect server from outside a flow run: health, work
pools and workers, deployments, flow runs and their artifacts.

Every failure becomes a :class:`~radflow.errors.RadflowError` with the fix: a server that does
not answer is :class:`~radflow.errors.PrefectUnavailable` (transient), an error answer is a
:class:`~radflow.errors.SiteError`. (Inside flow runs, flows use Prefect's own API.)

Example:
    ```python
    from radflow.site import SiteManager

    api = SiteManager().context("lab").prefect()
    run = api.create_flow_run("segment-and-quantify/lab", {"cohort": "abdomen-ct"})
    print(api.wait(run.id, timeout=600).state)
    ```
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import requests

from radflow.errors import ConfigurationError, PrefectUnavailable, SiteError

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RETRY_STATUSES = (408, 429, 502, 503, 504)  # the server is busy (its database locked): try again
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Prefect's SQLite server also answers 500 when a deferred transaction meets another writer
# ("database is locked"; seen in CI on saving a block, and on a flow run's state change): nothing
# was written, so Prefect's own clients try again too (they retry 408/429/502/503 by themselves,
# 500 only when told). Every environment and in-process setting that points a client at a site's
# or the hub's Prefect carries this.
PREFECT_CLIENT_RETRIES = {"PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
LIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}


class NotPaused(SiteError):
    """A resume of a run that is not paused (resumed already, or ended): a no-op."""

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message, fix="nothing to do: the run is not waiting for input")
        self.state = state


class ResumeRefused(SiteError):
    """A resume the server refused for good: no such run, or input that does not fit."""


@dataclass(frozen=True)
class FlowRunInfo:
    """A flow run as the server reports it."""

    id: str
    name: str
    state: str  # COMPLETED, FAILED, RUNNING...
    message: str | None = None
    deployment_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict, compare=False)
    tags: tuple[str, ...] = field(default=(), compare=False)
    created: bool = field(default=False, compare=False)  # made by this call (not found by key)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> FlowRunInfo:
        state = body.get("state") or {}
        return cls(str(body["id"]), body.get("name", ""), state.get("type", "PENDING"),
                   state.get("message"), body.get("deployment_id"),
                   body.get("parameters") or {}, tuple(body.get("tags") or ()))


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    status: str
    last_heartbeat: datetime | None


class PrefectApi:
    """A typed client of one Prefect server's REST API.

    Args:
        api_url: e.g. ``http://127.0.0.1:4200/api``.
        auth: the server's basic-auth user and password.
        timeout: seconds per request.
        site: the site name, for messages.
    """

    def __init__(self, api_url: str, auth: tuple[str, str], *, timeout: float = 30.0,
                 site: str | None = None, start: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.site = site
        self.start = start  # the command that starts its server (default: `radflow site up`)
        self._session = requests.Session()
        self._session.auth = auth

    def __repr__(self) -> str:  # never shows the password
        return f"PrefectApi({self.api_url!r})"

    def _request(self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (200, 201),
                 **kwargs: Any) -> requests.Response:
        url = f"{self.api_url}/{path.lstrip('/')}"
        where = f" of site {self.site!r}" if self.site else ""
        up = self.start or (f"radflow site up --site {self.site}" if self.site
                            else "radflow site up")
        # A 500 is retried too (see PREFECT_CLIENT_RETRIES), unless the caller reads it itself.
        retry = RETRY_STATUSES if 500 in ok else (*RETRY_STATUSES, 500)
        for delay in (*RETRY_DELAYS, None):
            try:
                answer = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:
                raise PrefectUnavailable(
                    f"the Prefect server{where} at {self.api_url} did not answer ({what}: "
                    f"{type(exc).__name__})", fix=f"start it (`{up}`) and try again") from exc
            if answer.status_code not in retry or delay is None:
                break
            time.sleep(delay)
        if answer.status_code in RETRY_STATUSES:
            raise PrefectUnavailable(f"the Prefect server{where} stayed busy ({what}: HTTP "
                                     f"{answer.status_code})",
                                     fix="try again; if it persists, read its log (`radflow "
                                         "site logs -c prefect-server`)")
        if answer.status_code in (401, 403):
            raise SiteError(f"the Prefect server at {self.api_url} refused the credentials "
                            f"({what})", fix="use the site's auth string "
                                             "(`radflow site credentials`)")
        if answer.status_code not in ok:
            raise SiteError(f"{what} failed: HTTP {answer.status_code} {answer.text[:200]}",
                            fix="read the Prefect server's log (`radflow site logs -c "
                                "prefect-server`)")
        return answer

    # -- server ------------------------------------------------------------------------------
    def version(self) -> str:
        """The server's version (raises PrefectUnavailable when it does not answer)."""
        return str(self._request("GET", "admin/version", "reading the version").json())

    # -- work pools and workers --------------------------------------------------------------
    def ensure_work_pool(self, name: str, pool_type: str = "process",
                         base_job_template: dict | None = None) -> bool:
        """Create a work pool unless it exists (with this base job template, when given: the
        server validates it); returns True if created."""
        body: dict = {"name": name, "type": pool_type}
        if base_job_template is not None:
            body["base_job_template"] = base_job_template
        answer = self._request("POST", "work_pools/", f"creating work pool {name}",
                               ok=(201, 409), json=body)
        return answer.status_code == 201

    def workers(self, pool: str) -> dict[str, WorkerInfo]:
        """The workers that polled a pool, by name."""
        answer = self._request("POST", f"work_pools/{pool}/workers/filter",
                               f"listing the workers of {pool}", ok=(200, 404), json={})
        if answer.status_code == 404:
            return {}
        found = {}
        for w in answer.json():
            beat = w.get("last_heartbeat_time")
            found[w["name"]] = WorkerInfo(w["name"], w.get("status", "?"),
                                          datetime.fromisoformat(beat) if beat else None)
        return found

    # -- deployments and runs ----------------------------------------------------------------
    def deployment_id(self, name: str) -> str:
        """The id of a deployment ``flow-name/deployment-name``.

        Raises:
            ConfigurationError: no such deployment (the message names the fix).
        """
        flow, _, deployment = name.partition("/")
        answer = self._request("GET", f"deployments/name/{flow}/{deployment}",
                               f"reading deployment {name}", ok=(200, 404))
        if answer.status_code == 404:
            raise ConfigurationError(f"there is no deployment {name!r} on {self.api_url}",
                                     fix="run `radflow site up` (it applies the site's "
                                         "deployments), or check the flow's name")
        return str(answer.json()["id"])

    def create_flow_run(self, deployment: str, parameters: dict[str, Any] | None = None, *,
                        idempotency_key: str | None = None,
                        tags: tuple[str, ...] = ()) -> FlowRunInfo:
        """Start a run of a deployment (``flow-name/deployment-name``)."""
        body: dict[str, Any] = {"parameters": json.loads(json.dumps(parameters or {},
                                                                    default=_plain)),
                                "tags": list(tags),
                                # a retried request (the server was busy) never makes two runs
                                "idempotency_key": idempotency_key or uuid.uuid4().hex}
        answer = self._request("POST", f"deployments/{self.deployment_id(deployment)}/"
                               "create_flow_run", f"starting a run of {deployment}", json=body)
        return replace(FlowRunInfo.from_api(answer.json()), created=answer.status_code == 201)

    def flow_runs_tagged(self, tag: str, limit: int = 10) -> list[FlowRunInfo]:
        """The flow runs carrying ``tag``, newest first."""
        answer = self._request("POST", "flow_runs/filter", f"finding the flow runs tagged {tag}",
                               json={"flow_runs": {"tags": {"all_": [tag]}},
                                     "sort": "EXPECTED_START_TIME_DESC", "limit": limit})
        return [FlowRunInfo.from_api(run) for run in answer.json()]

    def crashed_deployment_runs(self, since: datetime, limit: int = 50) -> list[FlowRunInfo]:
        """Flow runs of deployments (not subflows) that crashed since ``since``, oldest first."""
        answer = self._request("POST", "flow_runs/filter", "finding crashed flow runs", json={
            "flow_runs": {"state": {"type": {"any_": ["CRASHED"]}},
                          "deployment_id": {"is_null_": False},
                          "expected_start_time": {"after_": since.isoformat()}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": limit})
        return [FlowRunInfo.from_api(run) for run in answer.json()]

    def flow_runs_of(self, flow: str, states: tuple[str, ...], limit: int = 200
                     ) -> list[FlowRunInfo]:
        """The runs of the flow named ``flow`` in one of ``states`` (state types), newest
        first."""
        answer = self._request("POST", "flow_runs/filter", f"finding the runs of {flow}", json={
            "flows": {"name": {"any_": [flow]}},
            "flow_runs": {"state": {"type": {"any_": list(states)}}},
            "sort": "EXPECTED_START_TIME_DESC", "limit": limit})
        return [FlowRunInfo.from_api(run) for run in answer.json()]

    def set_state(self, run_id: str, state: str, message: str) -> None:
        """Force a flow run into ``state`` (a type: CRASHED...), e.g. one whose process died
        with the worker, so that nothing is left believing it runs."""
        self._request("POST", f"flow_runs/{run_id}/set_state", f"marking flow run {run_id} "
                      f"{state.lower()}", json={"state": {"type": state, "message": message},
                                                "force": True})

    def rerun(self, run: FlowRunInfo, tags: tuple[str, ...], idempotency_key: str) -> FlowRunInfo:
        """A new run of a flow run's deployment with its parameters (a crashed run stays as it
        ended: Prefect would read back its crashed task runs if it ran again under the same
        id). The idempotency key keeps a repeated call from making two."""
        answer = self._request("POST", f"deployments/{run.deployment_id}/create_flow_run",
                               f"running flow run {run.id} again",
                               json={"parameters": run.parameters, "tags": list(tags),
                                     "idempotency_key": idempotency_key})
        return FlowRunInfo.from_api(answer.json())

    def flow_run(self, run_id: str) -> FlowRunInfo:
        return FlowRunInfo.from_api(self._request("GET", f"flow_runs/{run_id}",
                                                  f"reading flow run {run_id}").json())

    def wait(self, run_id: str, timeout: float, poll: float = 1.0) -> FlowRunInfo:
        """Wait until a flow run ends (or the timeout passes; then it is returned as it is)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run.is_final or time.monotonic() > deadline:
                return run
            time.sleep(poll)

    def resume(self, run_id: str, run_input: dict[str, Any] | None = None) -> FlowRunInfo:
        """Resume a paused or suspended flow run with its input, as Prefect's UI does
        (``POST /flow_runs/{id}/resume``); the server validates the input against the schema
        the run declared.

        Raises:
            NotPaused: the run is not paused (resumed already, or ended): nothing was done.
            ResumeRefused: no such run, or the server refused the input (its reason).
            SiteError: any other failure.
        """
        what = f"resuming flow run {run_id}"
        for delay in (*RETRY_DELAYS, None):
            answer = self._request("POST", f"flow_runs/{run_id}/resume", what,
                                   ok=(200, 201, 404, 500),
                                   json={"run_input": run_input} if run_input is not None else {})
            if answer.status_code not in (404, 500):  # (Prefect 3.8: 500 for an unknown run)
                break
            self._session.close()  # (and drops the connection after a 500: open a new one)
            known = self._request("GET", f"flow_runs/{run_id}", f"reading flow run {run_id}",
                                  ok=(200, 404))
            if known.status_code == 404:
                raise ResumeRefused(f"flow run {run_id} was not resumed: the site's Prefect "
                                    "does not know it", fix="check the run id (`radflow review "
                                                            "list`)")
            if known.json().get("state_type") != "PAUSED" or delay is None:
                break
            time.sleep(delay)  # a known paused run: its database was locked (nothing written)
        if answer.status_code in (404, 500):
            raise SiteError(f"{what} failed: HTTP {answer.status_code} {answer.text[:200]}",
                            fix="read the Prefect server's log (`radflow site logs -c "
                                "prefect-server`)")
        body = answer.json()
        if body.get("status") != "ACCEPT":
            reason = (body.get("details") or {}).get("reason") or body.get("status")
            run = self.flow_run(run_id)
            if run.state != "PAUSED":
                raise NotPaused(f"flow run {run_id} is not paused (it is {run.state.lower()}): "
                                "resumed already, or ended; nothing was done", state=run.state)
            raise ResumeRefused(f"flow run {run_id} was not resumed: {reason}",
                                fix="resume only a suspended run, with input that fits its "
                                    "schema")
        return self.flow_run(run_id)

    def run_input_schema(self, run_id: str, keyset_schema: str) -> dict[str, Any]:
        """The JSON schema a suspended run asks its input to fit (what Prefect's UI renders)."""
        answer = self._request("GET", f"flow_runs/{run_id}/input/{keyset_schema}",
                               f"reading the input schema of flow run {run_id}")
        value = answer.json()
        return json.loads(value) if isinstance(value, str) else value

    def flow_run_state(self, run_id: str) -> dict[str, Any]:
        """The raw state of a flow run (type, name, state_details)."""
        return self._request("GET", f"flow_runs/{run_id}", f"reading flow run {run_id}"
                             ).json().get("state") or {}

    def state_history(self, run_id: str) -> list[tuple[str, datetime]]:
        """A flow run's states in order, each with the time the server recorded it (where a
        run's time went: waiting for a worker, its process starting, its body)."""
        answer = self._request("GET", f"flow_run_states/?flow_run_id={run_id}",
                               f"reading the states of flow run {run_id}")
        return sorted(((s["type"], datetime.fromisoformat(s["timestamp"])) for s in answer.json()),
                      key=lambda pair: pair[1])

    def artifacts(self, flow_run_id: str, key: str | None = None) -> list[dict[str, Any]]:
        """The artifacts of a flow run (newest first), optionally only those with ``key``."""
        filters: dict[str, Any] = {"flow_run_id": {"any_": [str(flow_run_id)]}}
        if key:
            filters["key"] = {"any_": [key]}
        answer = self._request("POST", "artifacts/filter",
                               f"reading the artifacts of flow run {flow_run_id}",
                               json={"artifacts": filters, "sort": "CREATED_DESC"})
        return answer.json()

    def table_artifact(self, flow_run_id: str, key: str) -> list[dict[str, Any]]:
        """The rows of the latest table artifact ``key`` of a flow run ([] if none)."""
        found = self.artifacts(flow_run_id, key)
        if not found:
            return []
        data = found[0]["data"]
        return json.loads(data) if isinstance(data, str) else data

    def flow_run_ui(self, run_id: str) -> str:
        return f"{self.api_url.removesuffix('/api')}/runs/flow-run/{run_id}"


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return asdict(value)
    raise ConfigurationError(f"cannot send a {type(value).__name__} as a flow parameter",
                             fix="pass JSON values or dataclasses (SeriesRef, ...)")


def outside_event_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` where no asyncio loop runs in the thread. Prefect's sync-compatible calls
    (``Flow.to_deployment``, ``Block.save``...) return coroutines instead of running when the
    caller's thread has a running loop, as in Jupyter or under Playwright's sync API; there the
    call goes to a short-lived thread of its own."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    with ThreadPoolExecutor(1, thread_name_prefix="radflow-prefect") as pool:
        return pool.submit(fn, *args, **kwargs).result()
