# radflow's worker image: radflow and Prefect, no plugin. Flow runs of a site's docker or
# kubernetes work pool start from the site image, which stacks the plugins on this one
# (docker/README.md). Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t ghcr.io/radflow/radflow-worker:0.1.0 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TCP_NODELAY=1

# one unprivileged user; RADFLOW_HOME is mounted from the site (the flow run reads its config)
RUN useradd --system --uid 10001 --create-home --home-dir /home/radflow radflow

WORKDIR /opt/radflow
COPY constraints.txt pyproject.toml README.md ./
COPY radflow ./radflow
COPY orthanc ./orthanc
COPY blocks ./blocks
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import radflow, prefect, prefect_docker"

USER 10001:10001
WORKDIR /home/radflow
# a flow run's command comes from the worker (prefect flow-run execute); this is for a shell
CMD ["radflow", "--version"]
