#!/usr/bin/env bash
# Stand-in base images, for machines without access to an image registry.
#
# docker/Dockerfile and docker/docker-compose.yml name the real images (rust:1-bookworm,
# debian:bookworm-slim, postgres:15); users pull them as usual. Where a registry cannot be
# reached (this project's CI machines), this script builds a local image under each missing
# name, once, from what the machine has:
#
#   debian:bookworm, debian:bookworm-slim  a Debian bookworm root filesystem made with
#                                          debootstrap (minbase) from the machine's Debian
#                                          mirror, imported with `docker import`
#   rust:1-bookworm                        that Debian plus gcc/libc6-dev, the Rust toolchain
#                                          installed on this machine (rustup's, copied in), and
#                                          this machine's CA bundle (HTTPS to crates.io from a
#                                          container works here only with it)
#   haproxy:2.6                            that Debian plus Debian's haproxy (2.6), run like the
#                                          official image (haproxy -W -db -f
#                                          /usr/local/etc/haproxy/haproxy.cfg, as user haproxy)
#   postgres:15                            that Debian plus Debian's postgresql-15, with an
#                                          entrypoint that honours POSTGRES_USER, POSTGRES_PASSWORD
#                                          and POSTGRES_DB and initialises an empty volume the
#                                          way the official image does
#
# An image that exists locally, or that `docker pull` can fetch, is left alone (so on a machine
# with a registry this script does nothing but pull). Run as root; needs a running Docker engine.
#
#   scripts/standin-images.sh                 # every image the compose file needs
#   scripts/standin-images.sh postgres:15     # just these
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${STANDIN_WORK:-/var/tmp/records-standin}
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(debian:bookworm-slim rust:1-bookworm postgres:15 haproxy:2.6)

log() { echo "standin: $*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# True when the image is here or could be pulled (bounded: a registry that hangs counts as none).
available() {
  have "$1" && return 0
  timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

debian() {
  have debian:bookworm && { have debian:bookworm-slim || docker tag debian:bookworm debian:bookworm-slim; return 0; }
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap; }
  local rootfs="$WORK/bookworm"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  log "debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # As the official images: sources for the same mirror, no recommends, no package caches.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
EOF
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/99norecommends"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing debian:bookworm"
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - debian:bookworm >/dev/null
  docker tag debian:bookworm debian:bookworm-slim
  rm -rf "$rootfs"
}

rust() {
  debian
  local toolchain
  toolchain=$(rustc --print sysroot)
  local ctx="$WORK/rust"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  log "rust:1-bookworm from $toolchain"
  mkdir -p "$ctx/toolchain"
  # Everything but share/ (documentation): bin, lib (rustc's libraries and the std rlibs), etc.
  for part in bin lib libexec etc; do
    [ -e "$toolchain/$part" ] && cp -a "$toolchain/$part" "$ctx/toolchain/"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev binutils ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The host's CA bundle: outbound HTTPS from here passes a proxy only it trusts.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
EOF
  docker build -q -t rust:1-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
}

postgres() {
  debian
  local ctx="$WORK/postgres"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  log "postgres:15 from Debian's postgresql-15"
  cp "$ROOT/docker/standin/postgres-entrypoint.sh" "$ctx/docker-entrypoint.sh"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
  docker build -q -t postgres:15 "$ctx" >/dev/null
  rm -rf "$ctx"
}

haproxy() {
  debian
  local ctx="$WORK/haproxy"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  log "haproxy:2.6 from Debian's haproxy"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy \
    && chown haproxy:haproxy /var/lib/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
DOCKERFILE
  docker build -q -t haproxy:2.6 "$ctx" >/dev/null
  rm -rf "$ctx"
}

mkdir -p "$WORK"
for image in "${IMAGES[@]}"; do
  if available "$image"; then
    log "$image is available"
    continue
  fi
  case "$image" in
    debian:bookworm|debian:bookworm-slim) debian ;;
    rust:1-bookworm) rust ;;
    postgres:15) postgres ;;
    haproxy:2.6) haproxy ;;
    *) log "no stand-in recipe for $image"; exit 1 ;;
  esac
  log "$image built locally ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
done
