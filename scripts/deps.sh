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

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install_missing deps.sh "${PACKAGES[@]}"

echo "deps.sh: all dependencies present"
