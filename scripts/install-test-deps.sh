#!/usr/bin/env bash
# Install the peers the tests run against that pip does not provide, into
# .cache/bin (repo-relative, git-ignored). Idempotent: a tool already at the
# wanted version is left alone, so `make test` can run this every time.
#
# Each tool is one install_* function plus one line in main.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${REPO}/.cache/bin"

GRPCURL_VERSION="v1.9.4"
# The grpc-go interop client and server; bench/ builds the server at the
# same version, so the two share Go's build cache.
GRPC_GO_VERSION="v1.85.0"
# v5.8.3 and later need Go 1.27; v5.8.2 is the newest that builds with Go 1.26.
KUSTOMIZE_VERSION="v5.8.2"

LOG_PREFIX="install-test-deps"
# shellcheck source=scripts/lib.sh
source "${REPO}/scripts/lib.sh"

# go install builds from source through the Go module proxy, checked against
# the Go checksum database, so no binary of unknown origin lands in .cache.
go_install() {
    local name="$1" module="$2" version="$3"
    if installed "${name}" "${version}"; then
        log "${name} ${version}: already installed"
        return
    fi
    need go "install Go (https://go.dev/dl/) to build ${name}"
    log "${name} ${version}: go install ${module}@${version}"
    GOBIN="${BIN}" GOFLAGS="-trimpath" go install "${module}@${version}"
    mark_installed "${name}" "${version}"
}

# etcd and kube-apiserver, built from source and cached under .cache/kube.
install_kube() {
    "${REPO}/scripts/install-kube.sh"
}

install_grpcurl() {
    go_install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "${GRPCURL_VERSION}"
}

# go install names these "client" and "server"; they are renamed so that
# nothing else in .cache/bin is shadowed by so generic a name.
install_interop() {
    local role
    for role in client server; do
        if installed "grpc-interop-${role}" "${GRPC_GO_VERSION}"; then
            log "grpc-interop-${role} ${GRPC_GO_VERSION}: already installed"
            continue
        fi
        need go "install Go (https://go.dev/dl/) to build the grpc-go interop ${role}"
        log "grpc-interop-${role} ${GRPC_GO_VERSION}: go install google.golang.org/grpc/interop/${role}"
        GOBIN="${BIN}" GOFLAGS="-trimpath" \
            go install "google.golang.org/grpc/interop/${role}@${GRPC_GO_VERSION}"
        mv -f "${BIN}/${role}" "${BIN}/grpc-interop-${role}"
        mark_installed "grpc-interop-${role}" "${GRPC_GO_VERSION}"
    done
}

# Renders manifests/ for tests/test_manifests.py (`make manifests-check`).
install_kustomize() {
    go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "${KUSTOMIZE_VERSION}"
}

# With arguments, install only those tools (`install-test-deps.sh grpcurl`
# is what `make run` needs); without, everything the tests need.
main() {
    mkdir -p "${BIN}"
    if (($#)); then
        local tool
        for tool in "$@"; do
            "install_${tool}"
        done
        return
    fi
    install_grpcurl
    install_interop
    install_kustomize
    install_kube
}

main "$@"
