# ccr-webhook: the admission server (gunicorn over TLS), the warmer and the certs tool in one image.
#   docker build -t YOUR-REGISTRY/ccr-webhook:0.1.0 .
# The version label is ARG VERSION below, kept equal to pyproject.toml's version by tests/test_version.py.
# Pin the base by digest in your build (FROM python:3.12-slim-bookworm@sha256:...) for reproducible images.

FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when pyproject.toml changes), then the code.
COPY pyproject.toml README.md ./
# The slim base has no compiler: a dependency without a wheel fails here, loudly, not at run time.
RUN python -m venv /opt/ccr-webhook \
    && /opt/ccr-webhook/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/ccr-webhook/bin/pip install --no-cache-dir -r requirements.txt
COPY webhook ./webhook
RUN /opt/ccr-webhook/bin/pip install --no-cache-dir --no-deps . \
    && /opt/ccr-webhook/bin/python -m compileall -q /opt/ccr-webhook

FROM python:3.12-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ccr-webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The same uid:gid the manifests run as (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 ccr-webhook \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ccr-webhook
COPY --from=build /opt/ccr-webhook /opt/ccr-webhook
ENV PATH=/opt/ccr-webhook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8443 9102
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz.
ENTRYPOINT ["ccr-webhook"]
CMD ["serve", "--config", "/etc/ccr-webhook/config.yaml"]
