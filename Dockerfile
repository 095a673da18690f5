# blokir container image: the DNS forwarder, the sample lists and an index compiled at build time,
# running as an unprivileged user (uid 10053) that may bind port 53.
#
#   docker build -t blokir .                    (BuildKit: Docker 23 and later)
#   podman build --format docker -t blokir .    (the docker format keeps the HEALTHCHECK)
#   docker run -d --name blokir -p 53:53/udp -p 53:53/tcp -p 9153:9153 \
#       -e BLOKIR_UPSTREAMS=10.0.0.1,10.0.0.2 -v /srv/blokir:/etc/blokir:ro blokir
#
# /srv/blokir holds blokir.toml (start from config/container.toml) and lists/. Behind a proxy
# that re-signs TLS, give the build that proxy's CA as a secret (never stored in the image):
#   docker build --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt -t blokir .
# --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:... pins the base. scripts/container-test
# builds and runs this file for real; docs/operations.md, "Container", documents the
# variables, volumes and sizes.

ARG BASE_IMAGE=debian:bookworm-slim

# -- build: the wheels of blokir and its dependencies, installed into a venv ------------------
FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a layer cache keeps them while the code
# changes. The only step that reaches PyPI; behind a proxy that re-signs TLS its CA comes in as
# the optional secret extra_ca (appended to Debian's bundle for this step, never stored).
# --copies: the venv has its own interpreter binary, so the runtime stage can give that one
# file (and no other Python) the capability to bind port 53.
COPY pyproject.toml ./
RUN --mount=type=secret,id=extra_ca,required=false \
    set -eu; \
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 \
        PIP_DISABLE_PIP_VERSION_CHECK=1; \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.pem; \
        export PIP_CERT=/tmp/ca.pem; \
    fi; \
    python3 -m venv --copies /opt/blokir; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt; \
    /opt/blokir/bin/pip wheel --wheel-dir /wheels -r /tmp/requirements.txt; \
    /opt/blokir/bin/pip install --no-index --find-links /wheels -r /tmp/requirements.txt; \
    python3 -m venv /opt/build; \
    /opt/build/bin/pip install 'setuptools>=68' wheel 'mypy>=1.10'; \
    rm -f /tmp/ca.pem /tmp/requirements.txt
# Then blokir itself, offline, built by the build venv (setuptools, and mypy to compile the hot
# path: setup.py), so no build tool ends up in /opt/blokir. The image must run compiled code: the
# build fails here if the compile fell back to pure Python.
COPY README.md setup.py ./
COPY resolver ./resolver
RUN set -eu; \
    export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1; \
    /opt/build/bin/pip wheel --no-index --no-deps --no-build-isolation --wheel-dir /wheels .; \
    /opt/blokir/bin/pip install --no-index --find-links /wheels blokir; \
    (cd / && /opt/blokir/bin/python -c 'import sys, resolver; print("blokir hot path:", resolver.NATIVE.why); sys.exit(not resolver.NATIVE.compiled)'); \
    /opt/blokir/bin/pip uninstall -y -q setuptools wheel packaging; \
    /opt/blokir/bin/pip check; \
    /opt/blokir/bin/pip uninstall -y -q pip; \
    find /opt/blokir/lib -type d -name tests -prune -exec rm -rf {} +; \
    cd /opt/blokir/bin; \
    for name in python python3; do ln -sf python3.11 "$name"; done; \
    rm -f activate* Activate.ps1 pip* wheel; \
    /opt/blokir/bin/blokir --version

# -- runtime: Debian's Python, the venv, the config, the lists and a ready index --------------
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# python3: the interpreter's standard library (the venv's binary is a copy of Debian's);
# libcap2-bin: setcap now, getcap for whoever checks. A fixed uid/gid (10053) so that host
# directories mounted as volumes can be chowned to it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libcap2-bin libarchive13 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10053 blokir \
    && useradd --system --uid 10053 --gid blokir --home-dir /var/lib/blokir --no-create-home \
        --shell /usr/sbin/nologin blokir
COPY --from=build /opt/blokir /opt/blokir
# Port 53 without root: only the venv's interpreter may bind ports below 1024. Keep
# NET_BIND_SERVICE in the container's capability set (Docker and Podman do by default; with
# --cap-drop=ALL add --cap-add=NET_BIND_SERVICE, or the kernel refuses to start the binary).
RUN setcap cap_net_bind_service=+ep /opt/blokir/bin/python3.11 \
    && getcap /opt/blokir/bin/python3.11 | grep -q cap_net_bind_service
COPY config/container.toml /etc/blokir/blokir.toml
COPY blocklists/sample-allow.txt blocklists/sample-domains.txt blocklists/sample-hosts.txt \
     blocklists/sample-adblock.txt blocklists/sample-rpz.rpz /etc/blokir/lists/
# The index is compiled now, so the container answers the instant it starts. It records each
# list's size and mtime; whole-second mtimes survive every layer format, so the index stays
# current in the final image. Lists mounted over /etc/blokir/lists differ, and `blokir serve`
# then recompiles into /var/lib/blokir before answering (and again on SIGHUP).
RUN mkdir -p /var/lib/blokir \
    && touch -d '2000-01-01 00:00:00 UTC' /etc/blokir/lists/* \
    && /opt/blokir/bin/blokir compile -c /etc/blokir/blokir.toml \
    && chown -R blokir:blokir /var/lib/blokir
# BLOKIR_CONFIG: `docker exec <name> blokir status` (or reload, check) finds this config and
# through it the running server's control socket, with no -c.
ENV PATH=/opt/blokir/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BLOKIR_CONFIG=/etc/blokir/blokir.toml
USER blokir:blokir
WORKDIR /var/lib/blokir
EXPOSE 53/udp 53/tcp 9153/tcp
VOLUME ["/etc/blokir", "/var/lib/blokir"]
# A real DNS query to the first listen address (wildcards mean loopback), after the same
# BLOKIR_* overrides the server applied. Any answer counts, SERVFAIL included: the server is up;
# whether the upstreams are is /readyz's business (port 9153).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["/opt/blokir/bin/python3", "-c", "import os,dns.message,dns.query,dns.rcode;from resolver.config import load_config;from resolver.envconfig import apply_env;h,p=apply_env(load_config('/etc/blokir/blokir.toml'),os.environ).server.listen[0];h={'0.0.0.0':'127.0.0.1','::':'::1'}.get(h,h);r=dns.query.udp(dns.message.make_query('healthcheck.blokir.invalid','A'),h,port=p,timeout=8);print(h,p,dns.rcode.to_text(r.rcode()))"]
# SIGTERM drains in-flight queries and exits 0; SIGHUP recompiles changed lists and reloads.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/blokir/bin/blokir"]
CMD ["serve", "-c", "/etc/blokir/blokir.toml"]
# Last, so that a new revision or date relabels the image without rebuilding a layer.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="blokir" \
      org.opencontainers.image.description="DNS forwarder that enforces national and operator blocklists at ISP scale" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
