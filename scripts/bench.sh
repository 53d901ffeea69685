#!/usr/bin/env bash
# The benchmark command: builds the release binaries, then measures PAM calls in process
# (pam_start … pam_end through libpam: pam_permit, pam_google_authenticator, pam_oath and
# pam_mfa, beside the fsync floor), ssh logins through a
# private sshd (password only; + pam_mfa; + pam_google_authenticator; + pam_oath, same
# secret), mfad alone over its socket (1 to 200 concurrent clients; SQLite, and a private
# PostgreSQL with one mfad and with two), its memory, and the cost against the store's
# size. Prints the tables and writes them into docs/BENCHMARKS.md. Needs root (a throwaway
# user, /etc/pam.d, a private sshd, a PostgreSQL server run as the postgres user).
#
#   scripts/bench.sh            full run (a few minutes), rewrites docs/BENCHMARKS.md
#   scripts/bench.sh --smoke    a short run that writes nothing (what CI may afford)
#   scripts/bench.sh --skip-ssh | --only-ssh | --only-pam | --ssh-rounds N   parts of the full run
#
# Benchmarks never fail on a time: the exit status says only whether the run worked.
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh
require_root scripts/bench.sh "the ssh benchmark creates a user, writes /etc/pam.d and starts sshd"
deps_and_cargo

cargo build --release -p mfad -p pam_mfa -p mfa -p mfa-bench
target_dir=${CARGO_TARGET_DIR:-target}
export MFA_E2E_BIN_DIR="$PWD/$target_dir/release"
case "$target_dir" in /*) export MFA_E2E_BIN_DIR="$target_dir/release" ;; esac

smoke=0
for a in "$@"; do
    [ "$a" = "--smoke" ] && smoke=1
done
if [ "$smoke" -eq 1 ]; then
    exec "$MFA_E2E_BIN_DIR/mfa-bench" "$@"
fi
exec "$MFA_E2E_BIN_DIR/mfa-bench" --write docs/BENCHMARKS.md "$@"
