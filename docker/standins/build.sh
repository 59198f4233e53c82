#!/usr/bin/env bash
# Builds STAND-IN images, from Debian bookworm packages, for the four images that
# docker/Dockerfile and docker/compose.yaml pull from Docker Hub, and tags them with the
# official names, so the deployment can be built and run where no registry is reachable
# (tests/test_docker.py does this). They are NOT the official images (see docker/README.md,
# "Without a registry"): do not push them, and do not run production on them.
#
#   python:3.11-slim          <- Debian python3 3.11 + python3-venv
#   rabbitmq:3.13-management  <- Debian rabbitmq-server 3.10 (management, prometheus plugins)
#   redis:7-alpine            <- Debian redis-server 7.0 (glibc, not Alpine)
#   haproxy:2.6               <- Debian haproxy 2.6
#
# The base is `debootstrap --variant=minbase bookworm` imported with `docker import`, plus
# this machine's CA certificates (/etc/ssl/certs/ca-certificates.crt and
# /usr/local/share/ca-certificates/), so apt and pip inside `docker build` trust the same
# TLS interception proxy as the host. The debootstrap tarball is cached in
# $HUB_STANDIN_CACHE (default /var/cache/hub-test-docker); Docker's layer cache does the rest.
#
# Needs root, debootstrap and a docker CLI ($DOCKER, default `docker`; DOCKER_HOST is honoured).
#   docker/standins/build.sh            build what is missing (layers are cached)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${HUB_STANDIN_CACHE:-/var/cache/hub-test-docker}
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs_image=hub-standin/debian-rootfs:bookworm

log() { printf '[standins] %s\n' "$*" >&2; }

rootfs_tarball() {
    # debootstrap once; the tarball outlives Docker's data root.
    local tarball=$cache/bookworm-minbase.tar
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }
        mkdir -p "$cache"
        local dir
        dir=$(mktemp -d "$cache/rootfs.XXXXXX")
        log "debootstrap --variant=minbase bookworm (once; cached in $tarball)"
        debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$dir"; exit 1; }
        cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
        # As Debian's official images: no recommends, no docs or man pages, no apt caches.
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$dir/etc/apt/apt.conf.d/90standin"
        printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
            >"$dir/etc/dpkg/dpkg.cfg.d/90standin-nodoc"
        printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' >"$dir/etc/apt/apt.conf.d/90standin-clean"
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
        tar -C "$dir" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$dir"
    fi
    echo "$tarball"
}

if ! $docker image inspect "$rootfs_image" >/dev/null 2>&1; then
    tarball=$(rootfs_tarball)
    log "docker import $tarball as $rootfs_image"
    $docker import "$tarball" "$rootfs_image" >/dev/null
fi

# The CA certificates go in through a build context of their own (they may change; the
# rootfs need not).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp /etc/ssl/certs/ca-certificates.crt "$context/"
mkdir "$context/local"
cp -r /usr/local/share/ca-certificates/. "$context/local/" 2>/dev/null || true
$docker build -q -t hub-standin/debian:bookworm -f "$here/base.Dockerfile" "$context" >/dev/null

build() {  # tag, Dockerfile
    log "building $1 (stand-in)"
    $docker build -q -t "$1" --label org.notification-hub.standin=true -f "$here/$2" "$here" >/dev/null
}
build python:3.11-slim python.Dockerfile
build rabbitmq:3.13-management rabbitmq.Dockerfile
build redis:7-alpine redis.Dockerfile
build haproxy:2.6 haproxy.Dockerfile
log "stand-ins ready"
