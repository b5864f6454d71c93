# clusterbench: scikit-learn's K-Means digits benchmark as a REST service.
# The base image is pinned by digest (the python:3.11.16-slim-bookworm index, as recorded in
# docker-library/repo-info) so that a rebuild starts from the same bytes; move it forward on
# purpose, together with requirements.lock.
FROM python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer, rebuilt only when the lock changes: exactly the versions
# pinned by `make lock`, every file checked against its hash, nothing resolved here. The
# lock also pins the build backend, so the project below is built without fetching one.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

# The build's own leftovers (build/, *.egg-info) go in the same layer: they are not
# the installed package and would only weigh the image.
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && groupadd --gid 10001 clusterbench \
    && useradd --create-home --uid 10001 --gid 10001 clusterbench \
    && mkdir /data \
    && chown 10001:10001 /data

# A bind-mounted /data must be writable by this user (uid 10001), or the container run with
# `--user` as the directory's owner (matplotlib's cache is in /tmp, writable by any uid).
USER 10001:10001

ENV CLUSTERBENCH_HOST=0.0.0.0 \
    CLUSTERBENCH_PORT=8000 \
    CLUSTERBENCH_DATA_DIR=/data \
    CLUSTERBENCH_SHUTDOWN_GRACE_S=30
VOLUME ["/data"]
EXPOSE 8000

# Asks the port the service listens on, which `-e CLUSTERBENCH_PORT=...` may have moved.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLUSTERBENCH_PORT', '8000'), timeout=4)"]

# On SIGTERM the server refuses new connections and lets running requests finish for up to
# CLUSTERBENCH_SHUTDOWN_GRACE_S seconds: give `docker stop` more than that (--stop-timeout).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
