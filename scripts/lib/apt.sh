# Sourced by scripts/build-deps.sh and scripts/deps.sh: installs the Debian packages given
# that are missing, with `apt-get update` only when the lists are missing or a day old (or
# an install fails on stale lists). Usage: apt_install_missing NAME PACKAGE...

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "${APT_WHO:-apt}: need root to run: $*" >&2
        return 1
    fi
}

apt_install_missing() {
    APT_WHO=$1
    shift
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "$APT_WHO: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are missing on a fresh machine, and stale after a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        as_root apt-get update -q
    fi
    if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}
