#!/usr/bin/env bash
# The container image, built and run for real with podman (Debian packages only, no
# container registry needed):
#
#   deploy/local/image.sh base     # a Debian bookworm base image (python3, venv) made
#                                  # with mmdebstrap from Debian packages; kept once made
#   deploy/local/image.sh build    # the project's Dockerfile on that base (layers cached)
#   deploy/local/image.sh run [podman run options...] [-- command...]
#                                  # the image as a container: read-only root, host network
#   deploy/local/image.sh check    # exit 0 when podman can run a container here
#   deploy/local/image.sh tools    # install podman, mmdebstrap and runc (Debian)
#
# Environment: WG_IMAGE (localhost/webhook-gateway:dev), WG_BASE_IMAGE
# (localhost/webhookgw-base:bookworm), PYTHON_IMAGE (the Dockerfile's base; default
# WG_BASE_IMAGE, set python:3.11-slim-bookworm where a registry is reachable),
# DEBIAN_MIRROR (http://deb.debian.org/debian), WG_OCI_RUNTIME (crun or runc; default:
# the first that can start a container here).
#
# What this machine may need, found out here rather than guessed by the user:
# * crun refuses a "hybrid" cgroup layout (v1 controllers beside a v2 hierarchy that has
#   controllers); runc handles it, so runc is the fallback runtime.
# * podman asks for a higher open-files/processes limit than an unprivileged sandbox
#   allows (EPERM from setrlimit): containers get this shell's hard limits instead.
# * a TLS-intercepting proxy: when the host's pip trusts an extra CA (PIP_CERT), the
#   build's pip gets the same CA file through a bind mount that is not part of any layer.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/_lib.sh"

image="${WG_IMAGE:-localhost/webhook-gateway:dev}"
base="${WG_BASE_IMAGE:-localhost/webhookgw-base:bookworm}"
python_image="${PYTHON_IMAGE:-$base}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$state_root/image"

ensure_tools() {
    ensure_pkg podman podman
    ensure_pkg mmdebstrap mmdebstrap
    ensure_pkg runc runc
}

# The resource limits every container gets: at most what this process may hold.
ulimits() {
    local files procs
    files="$(ulimit -Hn)"
    procs="$(ulimit -Hu)"
    [ "$files" = unlimited ] && files=1048576
    # conmon caps its children's processes at 32768 (podman's default limit).
    if [ "$procs" = unlimited ] || [ "$procs" -gt 32768 ]; then procs=32768; fi
    echo "--ulimit nofile=$files:$files --ulimit nproc=$procs:$procs"
}

runtime() {
    if [ -n "${WG_OCI_RUNTIME:-}" ]; then echo "$WG_OCI_RUNTIME"; return 0; fi
    local candidate
    for candidate in crun runc; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        # shellcheck disable=SC2046
        if podman --runtime "$candidate" run --rm --network host $(ulimits) "$base" true \
            >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

have_image() { podman image exists "$1"; }

cmd_base() {
    ensure_tools
    if have_image "$base" && [ "${1:-}" != "--force" ]; then
        echo "image.sh: base image $base exists (image.sh base --force makes it anew)"
        return 0
    fi
    mkdir -p "$work"
    local tar="$work/base.tar"
    # What python:3.11-slim-bookworm offers the Dockerfile: python (and python3) with
    # venv, groupadd/useradd (passwd), a UTF-8 locale; no documentation.
    mmdebstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,passwd \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$tar" "$mirror"
    podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tar" "$base"
    rm -f "$tar"
    echo "image.sh: base image $base made from Debian bookworm packages"
}

cmd_build() {
    ensure_tools
    [ "$python_image" != "$base" ] || have_image "$base" || cmd_base
    local rt mounts=()
    rt="$(runtime)" || die "podman cannot run a container here (image.sh check says why)"
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        mkdir -p "$work"
        printf '[global]\ncert = /run/host-ca.pem\n' >"$work/pip.conf"
        mounts=(-v "$PIP_CERT:/run/host-ca.pem:ro" -v "$work/pip.conf:/etc/pip.conf:ro")
    fi
    # shellcheck disable=SC2046
    # Docker format: OCI images have no HEALTHCHECK.
    podman --runtime "$rt" build --format docker --network host $(ulimits) "${mounts[@]}" \
        --build-arg "PYTHON_IMAGE=$python_image" \
        --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")" \
        --build-arg "REVISION=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$image" -f "$root/Dockerfile" "$root"
}

cmd_run() {
    local rt opts=() argv=()
    rt="$(runtime)" || die "podman cannot run a container here (image.sh check says why)"
    while [ $# -gt 0 ]; do
        if [ "$1" = "--" ]; then shift; argv=("$@"); break; fi
        opts+=("$1"); shift
    done
    # The image's only writable place is its working directory: a volume there, the
    # rest read-only, as a Kubernetes pod with readOnlyRootFilesystem runs it.
    # shellcheck disable=SC2046
    exec podman --runtime "$rt" run --rm --read-only --network host $(ulimits) \
        "${opts[@]}" "$image" "${argv[@]}"
}

cmd_check() {
    command -v podman >/dev/null 2>&1 || die "podman is not installed (apt-get install podman)"
    have_image "$base" || die "no base image $base (image.sh base)"
    local candidate out
    if runtime >/dev/null; then echo "image.sh: podman runs containers with $(runtime)"; return 0; fi
    for candidate in crun runc; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        # shellcheck disable=SC2046
        out="$(podman --runtime "$candidate" run --rm --network host $(ulimits) "$base" true 2>&1 || true)"
        echo "image.sh: $candidate: $out" >&2
    done
    return 1
}

case "${1:-}" in
    base) shift; cmd_base "$@" ;;
    build) shift; cmd_build "$@" ;;
    run) shift; cmd_run "$@" ;;
    check) shift; cmd_check "$@" ;;
    tools) ensure_tools ;;
    runtime) runtime ;;
    *) echo "usage: $0 base [--force]|build|run [options] [-- command]|check|tools|runtime" >&2; exit 2 ;;
esac
