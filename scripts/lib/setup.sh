# Sourced by scripts/test.sh and scripts/bench.sh: what both need before they build.

# Exits unless run as root, saying why (`$1`: the script, `$2`: what needs root).
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$1: $2;" >&2
        echo "run it as root: sudo $1" >&2
        exit 1
    fi
}

# The test tools, then cargo on PATH (rustup's env file when cargo came from rustup).
deps_and_cargo() {
    scripts/deps.sh
    if [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
}
