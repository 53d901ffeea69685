#!/usr/bin/env bash
# Installs what building mfa, running its tests and the demo need, on Debian or Ubuntu.
# Idempotent: installs only missing packages, runs `apt-get update` only when it must, and
# installs a Rust toolchain (rustup, stable) only when cargo is missing or too old.
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(
    # build: C compiler (bundled SQLite, libc), PAM headers and libpam.so to link the module
    build-essential pkg-config libpam0g-dev
    # rustup download
    ca-certificates curl
    # end-to-end tests and the demo: a real sshd and clients, PAM test tools, expect, TOTP
    openssh-server openssh-client pamtester libpam-wrapper sshpass expect
    python3-paramiko oathtool sqlite3
    # reads back the QR codes mfa draws in the terminal (tests/src/qr.rs)
    zbar-tools
    # transfers through the second factor (scp and sftp come with openssh-client)
    rsync
    # the approval page tested as a person meets it: headless Chromium under chromedriver
    chromium chromium-driver
    # useradd/chpasswd/userdel, setsid/setpriv/flock, timeout, systemd-analyze (checks the unit)
    passwd util-linux coreutils systemd
    # benchmarks (scripts/bench.sh) and the profile: the modules compared with pam_mfa, a
    # private user database for mfad (nss_wrapper), callgrind
    libpam-google-authenticator libpam-oath libnss-wrapper valgrind
    # the shipped fail2ban filter, checked with fail2ban-regex against real decision lines,
    # from a log file and from a private journal (its systemd backend needs python3-systemd)
    fail2ban python3-systemd
    # the PostgreSQL store's tests: each starts a throwaway server of its own as the
    # `postgres` user (test-support/src/postgres.rs); Debian 12's metapackage brings
    # postgresql-15. Its system cluster is never used (and without systemd never starts).
    postgresql
)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "deps.sh: need root to run: $*" >&2
        return 1
    fi
}

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package lists are missing on a fresh machine, and stale after a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        as_root apt-get update -q
    fi
    if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi

# Rust: the workspace's rust-version or newer.
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
need=${need:-1.85}
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
have=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
version_ok() {
    [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
if ! command -v cargo >/dev/null || ! version_ok "$have" "$need"; then
    if command -v rustup >/dev/null; then
        echo "deps.sh: rustc ${have:-missing} is older than $need; updating stable"
        rustup toolchain install stable --profile minimal
        rustup default stable
    else
        echo "deps.sh: installing Rust (rustup, stable, minimal profile)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --default-toolchain stable
    fi
fi
echo "deps.sh: all dependencies present"
