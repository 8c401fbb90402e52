# One image for every orderflow process: the command picks it (api, relay, worker, migrate, ...).
# The build needs no network: every wheel comes from .wheelhouse/, prepared outside the build.
#   deploy/docker/wheelhouse.sh                    # or `make image`, which does all of this
#   docker build -t orderflow:0.1.0 .
#   docker run orderflow:0.1.0                      # the API on :8000
#   docker run orderflow:0.1.0 worker --handlers payments
# No registry reachable? Build a local base first: deploy/docker/make-base-image.sh, then
#   docker build --build-arg BASE_IMAGE=orderflow-base:bookworm -t orderflow:0.1.0 .
# (No `# syntax=` line: it would make BuildKit fetch a frontend image from a registry.)
ARG BASE_IMAGE=python:3.11-slim

# ---- build: a virtualenv with the locked runtime dependencies and the package -------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/orderflow
# Dependencies first, in their own layer, so that a code change does not reinstall them. The
# wheelhouse holds exactly the locked runtime dependencies (no dev tool).
COPY .wheelhouse/deps /wheels/deps
RUN /opt/orderflow/bin/pip install --find-links /wheels/deps /wheels/deps/*.whl
# Then the package, a wheel built from a clean copy of src/, with --no-deps.
COPY .wheelhouse/app /wheels/app
RUN /opt/orderflow/bin/pip install --no-deps /wheels/app/*.whl \
    && /opt/orderflow/bin/pip uninstall --yes pip setuptools \
    && find /opt/orderflow -name '*.pyc' -path '*/pip/*' -delete \
    && /opt/orderflow/bin/python -c "from orderflow import __version__; import orderflow.entrypoints.cli, orderflow.entrypoints.api.app"

# ---- runtime: the interpreter, the virtualenv, a non-root user --------------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="orderflow" \
      org.opencontainers.image.description="Event-driven order processing: api, relay, worker, migrate"
RUN groupadd --system --gid 10001 orderflow \
    && useradd --system --uid 10001 --gid orderflow --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin orderflow
COPY --from=build /opt/orderflow /opt/orderflow
ENV PATH=/opt/orderflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORDERFLOW_ENVIRONMENT=production \
    ORDERFLOW_HOST=0.0.0.0 \
    ORDERFLOW_PORT=8000
# The working directory holds nothing: settings come from ORDERFLOW_* variables, not a .env file.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 9101 9102
# Meaningful for the api command; relay and worker containers override it (compose, k8s).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ORDERFLOW_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["orderflow"]
CMD ["api", "--host", "0.0.0.0"]
