#!/usr/bin/env bash
# Install the peers the benchmarks need that pip does not provide, into
# .cache/bin (repo-relative, git-ignored), the way scripts/install-test-deps.sh
# installs the test peers. Idempotent: a tool already at the wanted version is
# left alone.
#
#   bench/install-deps.sh            everything
#   bench/install-deps.sh ghz        only the named tools
#
# The data-plane and coalescing scenarios need ghz (load), the grpc-go
# interop server (a backend that is not the bottleneck) and nginx (a
# yardstick); route-propagation and endpoint-change need the interop server
# (and etcd + kube-apiserver from scripts/install-kube.sh); cold-start and
# fan-out need none of them. h2load is optional.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${REPO}/.cache/bin"

GHZ_VERSION="v0.93.0"
GRPC_GO_VERSION="v1.85.0"

log() { printf 'bench/install-deps: %s\n' "$*" >&2; }

installed() {
    local name="$1" version="$2"
    [[ -x "${BIN}/${name}" && -f "${BIN}/.${name}.version" ]] &&
        [[ "$(cat "${BIN}/.${name}.version")" == "${version}" ]]
}

# go install builds from source through the Go module proxy, checked against
# the Go checksum database. A fourth argument names the binary go install
# writes when it is not NAME (the interop server is built as plain "server").
go_install() {
    local name="$1" module="$2" version="$3" built="${4:-$1}"
    if installed "${name}" "${version}"; then
        log "${name} ${version}: already installed"
        return
    fi
    if ! command -v go >/dev/null 2>&1; then
        log "missing 'go': install Go (https://go.dev/dl/) to build ${name}"
        exit 1
    fi
    log "${name} ${version}: go install ${module}@${version}"
    GOBIN="${BIN}" GOFLAGS="-trimpath" go install "${module}@${version}"
    if [[ "${built}" != "${name}" ]]; then
        mv -f "${BIN}/${built}" "${BIN}/${name}"
    fi
    printf '%s\n' "${version}" >"${BIN}/.${name}.version"
}

install_ghz() {
    go_install ghz github.com/bojand/ghz/cmd/ghz "${GHZ_VERSION}"
}

# grpc.testing.TestService (EmptyCall, UnaryCall, streaming) in Go.
install_interop_server() {
    go_install grpc-interop-server google.golang.org/grpc/interop/server \
        "${GRPC_GO_VERSION}" server
}

# nginx is the usual alternative the data plane is compared with: Debian's
# package, installed only when missing and only as root (else skipped, and
# the benchmark says nginx was not measured).
install_nginx() {
    if command -v nginx >/dev/null 2>&1; then
        log "nginx: already installed"
        return
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "nginx: not installed; as root on Debian: apt-get install -y nginx-light"
        return
    fi
    log "nginx: apt-get install -y nginx-light"
    # No service start: a policy-rc.d (or no init system) keeps it stopped;
    # the benchmark runs its own nginx with its own config.
    # A fresh machine has no package lists yet: update once, then retry.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends nginx-light; }
}

# h2load (Debian's nghttp2-client): a second HTTP/2 load generator, for the
# coalescing scenario's many client connections. Same rules as nginx.
install_h2load() {
    if command -v h2load >/dev/null 2>&1; then
        log "h2load: already installed"
        return
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "h2load: not installed; as root on Debian: apt-get install -y nghttp2-client"
        return
    fi
    log "h2load: apt-get install -y nghttp2-client"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nghttp2-client ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends nghttp2-client; }
}

main() {
    mkdir -p "${BIN}"
    if (($#)); then
        local tool
        for tool in "$@"; do
            "install_${tool//-/_}"
        done
        return
    fi
    install_ghz
    install_interop_server
    install_nginx
    install_h2load
}

main "$@"
