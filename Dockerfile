# clusterbench: scikit-learn's K-Means digits benchmark as a REST service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

COPY README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps . \
    && groupadd --gid 10001 clusterbench \
    && useradd --create-home --uid 10001 --gid 10001 clusterbench \
    && mkdir /data \
    && chown 10001:10001 /data

USER 10001:10001

ENV CLUSTERBENCH_HOST=0.0.0.0 \
    CLUSTERBENCH_PORT=8000 \
    CLUSTERBENCH_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["python", "-m", "service"]
