# Shared by the install scripts: logging, prerequisites, version stamps.
# Source it after setting LOG_PREFIX and BIN (the folder binaries go to).

log() { printf '%s: %s\n' "${LOG_PREFIX}" "$*" >&2; }

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        log "missing '$1': $2"
        exit 1
    fi
}

# A stamp beside each binary records the version installed, because not every
# tool reports its own version the same way (or at all without a server).
installed() {
    local name="$1" version="$2"
    [[ -x "${BIN}/${name}" && -f "${BIN}/.${name}.version" ]] &&
        [[ "$(cat "${BIN}/.${name}.version")" == "${version}" ]]
}

mark_installed() {
    printf '%s\n' "$2" >"${BIN}/.$1.version"
}
