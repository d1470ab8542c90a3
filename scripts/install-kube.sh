#!/usr/bin/env bash
# Install the Kubernetes API server the tests run against: etcd and
# kube-apiserver, into .cache/kube/bin (repo-relative, git-ignored).
#
# Idempotent: a binary already at the wanted version is left alone, so
# `make test-deps` can run this every time. Both are built from source with
# `go build` through the Go module proxy (checked against the Go checksum
# database), so no binary of unknown origin lands in .cache.
#
# kube-apiserver cannot be built with `go install k8s.io/kubernetes/...@v1.x`:
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...)
# at v0.0.0 and points them at ./staging with `replace`, which Go ignores in a
# dependency. So we build from a small wrapper module that requires
# k8s.io/kubernetes and replaces each staging module with its published
# v0.<minor>.<patch> twin. The list of staging modules is read from the
# go.mod of the pinned k8s.io/kubernetes, so a version bump needs no edit
# here. etcd's server module has local `replace`s too, so it gets the same
# kind of wrapper.
#
# Debian's etcd-server is used instead of building etcd when an etcd >= 3.5
# is already on PATH (bookworm ships 3.4, too old for kube-apiserver 1.3x).
#
# The Gateway API CRDs (standard channel) come from the same module proxy:
# `go mod download` of sigs.k8s.io/gateway-api at a pinned release, whose
# config/crd/standard/*.yaml are copied to .cache/kube/gateway-api-crds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${REPO}/.cache/kube"
BIN="${CACHE}/bin"
BUILD="${CACHE}/build"

# Matches the `kubernetes` Python client's major version (37 -> 1.37), the
# API the control plane is written against. Needs Go >= 1.26.
KUBE_VERSION="v1.37.2"
ETCD_VERSION="v3.6.16"
# Standard channel: GatewayClass, Gateway, HTTPRoute, GRPCRoute (v1) and
# ReferenceGrant (v1beta1), which the control plane watches.
GATEWAY_API_VERSION="v1.4.1"
CRDS="${CACHE}/gateway-api-crds"
MIN_ETCD="3.5"

# `go build` runs one compile per CPU; set GO_PARALLEL=1 where memory is
# short (a 2-core, 24 GiB machine builds fine with the default).
GO_PARALLEL="${GO_PARALLEL:-$(nproc 2>/dev/null || echo 2)}"

LOG_PREFIX="install-kube"
# shellcheck source=scripts/lib.sh
source "${REPO}/scripts/lib.sh"

go_env() {
    # -mod=mod lets the wrapper's go.mod gain the requirements it is missing;
    # GOTOOLCHAIN=local fails clearly instead of downloading another Go.
    env GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 "$@"
}

# version_ge A B: is A >= B, both "X.Y[.Z]"?
version_ge() {
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

install_etcd() {
    if installed etcd "${ETCD_VERSION}"; then
        log "etcd ${ETCD_VERSION}: already installed"
        return
    fi
    local system_etcd version
    system_etcd="$(command -v etcd || true)"
    if [[ -n "${system_etcd}" ]]; then
        version="$("${system_etcd}" --version 2>/dev/null | sed -n 's/^etcd Version: //p')"
        if [[ -n "${version}" ]] && version_ge "${version}" "${MIN_ETCD}"; then
            log "etcd: using ${system_etcd} (${version})"
            ln -sf "${system_etcd}" "${BIN}/etcd"
            mark_installed etcd "system:${system_etcd}:${version}"
            return
        fi
        log "etcd: ${system_etcd} is ${version:-of unknown version}, need >= ${MIN_ETCD}; building ${ETCD_VERSION}"
    fi
    need go "install Go (https://go.dev/dl/) to build etcd"
    local dir="${BUILD}/etcd-${ETCD_VERSION}"
    mkdir -p "${dir}"
    cat >"${dir}/go.mod" <<EOF
module xds-ingress.local/build/etcd

go 1.24

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
EOF
    log "etcd ${ETCD_VERSION}: go build go.etcd.io/etcd/server/v3"
    (cd "${dir}" && go_env go build -p "${GO_PARALLEL}" -trimpath -ldflags="-s -w" \
        -o "${BIN}/etcd.new" go.etcd.io/etcd/server/v3)
    mv -f "${BIN}/etcd.new" "${BIN}/etcd"
    mark_installed etcd "${ETCD_VERSION}"
}

# The wrapper go.mod for kube-apiserver: `require k8s.io/kubernetes` plus one
# `replace` per staging module that k8s.io/kubernetes requires at v0.0.0.
write_kube_wrapper() {
    local dir="$1" kube_mod="$2"
    local staging_version="v0.${KUBE_VERSION#v1.}"
    local go_line godebug
    go_line="$(sed -n 's/^go \(.*\)$/\1/p' "${kube_mod}")"
    godebug="$(grep -E '^godebug ' "${kube_mod}" || true)"
    {
        printf 'module xds-ingress.local/build/kube-apiserver\n\n'
        printf 'go %s\n\n' "${go_line}"
        # Same GODEBUG defaults as an upstream build of this version.
        if [[ -n "${godebug}" ]]; then printf '%s\n\n' "${godebug}"; fi
        printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "${KUBE_VERSION}"
        local module
        for module in $(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "${kube_mod}"); do
            # Staging modules kube-apiserver does not build against (the
            # samples) are not published at every version; skip what
            # k8s.io/kubernetes does not require.
            if grep -qE "^[[:space:]]*${module//./\\.} v0\.0\.0([[:space:]]|$)" "${kube_mod}"; then
                printf '\t%s => %s %s\n' "${module}" "${module}" "${staging_version}"
            fi
        done
        printf ')\n'
    } >"${dir}/go.mod"
}

install_kube_apiserver() {
    if installed kube-apiserver "${KUBE_VERSION}"; then
        log "kube-apiserver ${KUBE_VERSION}: already installed"
        return
    fi
    need go "install Go >= 1.26 (https://go.dev/dl/) to build kube-apiserver"
    local dir="${BUILD}/kube-apiserver-${KUBE_VERSION}"
    mkdir -p "${dir}"
    log "kube-apiserver ${KUBE_VERSION}: reading the staging modules from k8s.io/kubernetes's go.mod"
    local kube_mod
    kube_mod="$(cd "${dir}" && GOFLAGS= GOTOOLCHAIN=local \
        go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    if [[ ! -f "${kube_mod}" ]]; then
        log "could not download k8s.io/kubernetes@${KUBE_VERSION}"
        exit 1
    fi
    write_kube_wrapper "${dir}" "${kube_mod}"
    local minor="${KUBE_VERSION#v1.}"
    minor="${minor%%.*}"
    # What upstream's hack/lib/version.sh stamps, so /version reports the
    # real release rather than v0.0.0-master.
    local pkg="k8s.io/component-base/version"
    local ldflags="-s -w -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1"
    ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
    log "kube-apiserver ${KUBE_VERSION}: go build (-p ${GO_PARALLEL}; 6-10 min on 2 cores the first time)"
    (cd "${dir}" && go_env go build -p "${GO_PARALLEL}" -trimpath -ldflags="${ldflags}" \
        -o "${BIN}/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver)
    mv -f "${BIN}/kube-apiserver.new" "${BIN}/kube-apiserver"
    mark_installed kube-apiserver "${KUBE_VERSION}"
}

install_gateway_api_crds() {
    if [[ -f "${CRDS}/.version" && "$(cat "${CRDS}/.version")" == "${GATEWAY_API_VERSION}" ]]; then
        log "Gateway API CRDs ${GATEWAY_API_VERSION}: already installed"
        return
    fi
    need go "install Go (https://go.dev/dl/) to download the Gateway API CRDs"
    log "Gateway API CRDs ${GATEWAY_API_VERSION}: go mod download sigs.k8s.io/gateway-api"
    local dir
    dir="$(cd "${BUILD}" && GOFLAGS= GOTOOLCHAIN=local \
        go mod download -json "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    if [[ ! -d "${dir}/config/crd/standard" ]]; then
        log "could not download sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}"
        exit 1
    fi
    rm -rf "${CRDS}.new"
    mkdir -p "${CRDS}.new"
    # The module cache is read-only; the copies need not be.
    cp "${dir}"/config/crd/standard/*.yaml "${CRDS}.new/"
    chmod u+w "${CRDS}.new"/*.yaml
    printf '%s\n' "${GATEWAY_API_VERSION}" >"${CRDS}.new/.version"
    rm -rf "${CRDS}"
    mv "${CRDS}.new" "${CRDS}"
}

# With arguments, install only those parts (`install-kube.sh gateway_api_crds`);
# without, everything.
main() {
    mkdir -p "${BIN}" "${BUILD}"
    if (($#)); then
        local part
        for part in "$@"; do
            "install_${part}"
        done
        return
    fi
    install_etcd
    install_kube_apiserver
    install_gateway_api_crds
    log "ready: ${BIN}/etcd ${BIN}/kube-apiserver ${CRDS}"
}

main "$@"
