# syntax=docker/dockerfile:1
#
# Portico's container image: a static binary on distroless, run as a
# non-root user, with certificates and the ACME account in the /data volume.
#
#   docker build -t portico --build-arg VERSION="$(git describe --always --dirty)" .
#   docker run -d --name portico -p 80:80 -p 443:443 \
#     -v "$PWD/portico.toml:/etc/portico/portico.toml:ro" -v portico-data:/data \
#     --stop-timeout 35 portico
#
# The config must say [storage] path = "/data" (see examples/fleet/ for a
# fleet on Redis). Binding :80 and :443 as a non-root user: the binary
# carries cap_net_bind_service (set below); if your builder drops file
# capabilities when copying between stages, or you run with --cap-drop ALL,
# use `--cap-add NET_BIND_SERVICE` or
# `--sysctl net.ipv4.ip_unprivileged_port_start=80` (Docker 20.10 and later
# already set it to 0 on a container's own network), or listen on ports
# above 1024 and publish them as 80/443 (-p 80:8080 -p 443:8443).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
# setcap is in libcap2-bin
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Modules first, so that a change of the source reuses the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/usr/local/bin/portico ./cmd/portico \
 && setcap cap_net_bind_service=+ep /out/usr/local/bin/portico \
 && /out/usr/local/bin/portico version \
 && mkdir -p /out/state/data

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="Portico" \
      org.opencontainers.image.description="TLS-terminating reverse proxy with automatic HTTPS"
COPY --from=build /out/usr/local/bin/portico /usr/local/bin/portico
# /data itself is an entry of the copy, so --chown applies to it: the
# volume starts out writable by the nonroot user.
COPY --from=build --chown=65532:65532 /out/state/ /
# distroless's "nonroot" user
USER 65532:65532
VOLUME /data
EXPOSE 80 443
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/portico","health","-config","/etc/portico/portico.toml"]
# SIGTERM drains in-flight requests for up to 30 s: give `docker stop` 35 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portico","run","-config","/etc/portico/portico.toml"]
