# syntax=docker/dockerfile:1.7
# Taskmanager: a two-stage image. The build stage resolves dependencies from uv.lock with
# uv; the runtime stage gets only the finished virtual environment — no uv, no compilers,
# no dev dependencies, no sources — and runs as an unprivileged user.
#
#   docker build -t taskmanager .
#   docker run -p 8000:8000 -v taskmanager-data:/data taskmanager
#   docker run --rm -v taskmanager-data:/data taskmanager migrate     # any subcommand

# The Python the test suite runs on; every dependency ships wheels for it.
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
# Byte-compile at build time (the runtime filesystem may be read-only); copy rather than
# hard-link out of the cache mount; never let uv fetch another Python.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, from the lock file alone: this layer is reused until uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# --no-editable: the package is copied into site-packages, so /src is not needed later.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="taskmanager" \
      org.opencontainers.image.description="A production-grade, self-hostable task-management REST API"
# A fixed, high uid/gid with no login shell: it matches runAsUser in deploy/kubernetes.
RUN groupadd --system --gid 10001 taskmanager \
    && useradd --system --uid 10001 --gid taskmanager --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin taskmanager \
    && mkdir /data \
    && chown taskmanager:taskmanager /data
# Owned by root and read-only for the service user: the code cannot be rewritten at run time.
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKMANAGER_DATA_DIR=/data \
    PORT=8000
WORKDIR /app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
# SQLite file, file-system attachments and the generated secret key live here.
VOLUME ["/data"]
EXPOSE 8000
# uvicorn's graceful shutdown (drain, finish in-flight requests, close pools) runs on SIGTERM.
STOPSIGNAL SIGTERM
# Standard library only (the image has no curl); exits non-zero unless /health answers 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health'; sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
# Exec form: taskmanager is PID 1 and receives SIGTERM itself. The default command serves;
# any other subcommand replaces it (migrate, worker, create-admin, backup).
ENTRYPOINT ["taskmanager"]
CMD ["serve", "--host", "0.0.0.0"]
