#!/usr/bin/env bash
# Installs what building mfa, running its tests and the demo need, on Debian or Ubuntu:
# scripts/build-deps.sh (compiler, libpam0g-dev, Rust), then the test tools below. A host
# that only installs mfa needs neither: it installs the package (README, "Install on a host").
# Idempotent: installs only missing packages, runs `apt-get update` only when it must.
set -euo pipefail

cd "$(dirname "$0")/.."

scripts/build-deps.sh

PACKAGES=(
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
    # the package's install test (tests/tests/packaging.rs): a fresh Debian 12 root, and
    # lintian on the .deb
    mmdebstrap lintian
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

echo "deps.sh: all dependencies present"
