#!/usr/bin/env bash
# Helm for rendering and validating deploy/helm offline (tests/deploy/test_helm.py).
#   deploy/local/helm.sh install     builds helm from the Go module proxy into .cache/bin
#   deploy/local/helm.sh path        prints the helm binary the tests use
# Needs Go (https://go.dev); the first build takes a few minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
version="${HELM_VERSION:-v3.17.3}"
bin="$root/.cache/bin/helm"

install() {
    if command -v helm >/dev/null 2>&1; then echo "helm.sh: using $(command -v helm)"; return 0; fi
    if [ -x "$bin" ]; then echo "helm.sh: using $bin"; return 0; fi
    command -v go >/dev/null 2>&1 || die "go is missing: install Go 1.22+ (or put helm on PATH)"
    mkdir -p "$(dirname "$bin")"
    exec 9>"$(dirname "$bin")/.helm.lock"; flock 9
    [ -x "$bin" ] && return 0
    echo "helm.sh: building helm $version with go install (a few minutes)"
    GOBIN="$(dirname "$bin")" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$version" 9>&-
    echo "helm.sh: installed $bin"
}

case "${1:-}" in
    install) install ;;
    path) command -v helm 2>/dev/null || { [ -x "$bin" ] && echo "$bin"; } || exit 1 ;;
    *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
