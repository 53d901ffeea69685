#!/usr/bin/env bash
# Installs only what building mfa and its Debian package needs (scripts/package.sh), on
# Debian or Ubuntu: a C compiler (bundled SQLite), libpam0g-dev (to link the module),
# dpkg-dev (dpkg-shlibdeps), and a Rust toolchain (rustup, stable) when cargo is missing or
# too old. No test tools: those are scripts/deps.sh's. Idempotent: installs only what is
# missing, runs `apt-get update` only when it must.
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(
    # C compiler (bundled SQLite, libc), PAM headers and libpam.so to link the module
    build-essential pkg-config libpam0g-dev
    # OpenSSL headers and libssl.so: webauthn-rs checks WebAuthn signatures with it
    libssl-dev
    # dpkg-shlibdeps and dpkg-architecture for the package
    dpkg-dev
    # rustup download
    ca-certificates curl
)

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_install_missing build-deps.sh "${PACKAGES[@]}"

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
        echo "build-deps.sh: rustc ${have:-missing} is older than $need; updating stable"
        rustup toolchain install stable --profile minimal
        rustup default stable
    else
        echo "build-deps.sh: installing Rust (rustup, stable, minimal profile)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal --default-toolchain stable
    fi
fi
echo "build-deps.sh: build dependencies present"
