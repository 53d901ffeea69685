#!/usr/bin/env bash
# The one test command: installs what is missing (scripts/deps.sh), builds the workspace, then
# runs every test: unit tests, daemon tests over the socket, and the end-to-end tests against
# a private sshd with real ssh, scp and expect clients. Needs root. Exits non-zero on any
# failure. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- --nocapture`).
set -euo pipefail

cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/setup.sh
. scripts/lib/setup.sh
require_root scripts/test.sh "the end-to-end tests create users, write /etc/pam.d and start sshd"
deps_and_cargo

cargo build --workspace
# The Debian package (a release build of what it installs, then dpkg-deb), which
# tests/tests/packaging.rs installs into a fresh Debian 12 root and checks with lintian.
scripts/package.sh
# The Duo benchmark is built (not run, and in the debug profile: a release-profile build of
# the workspace again would cost minutes) so that it keeps compiling with the client it
# measures. `cargo bench -p mfad --bench duo_login` runs it optimized (docs/DUO.md).
cargo build -p mfad --benches
# The benchmarks' smoke run, on the debug build: checks that the harness works (sshd with
# four PAM stacks, mfad under load, pending pushes); it never fails on a time. The full
# run is scripts/bench.sh.
"${CARGO_TARGET_DIR:-target}/debug/mfa-bench" --smoke >/dev/null
# The fuzz targets (frame codec, the frame reader of both ends of the socket, config parser,
# token secrets and otpauth URIs), briefly:
# for the whole suite only, not when arguments pick tests. MFA_FUZZ_SECS sets the seconds
# per target (default 15; 0 skips). Built unoptimized (--quick, about 4 minutes; the
# optimized build took 12 of the suite's 40): here they prove the targets build and run
# clean; long optimized runs are scripts/fuzz.sh SECS by hand (docs/BENCHMARKS.md).
if [ "$#" -eq 0 ] && [ "${MFA_FUZZ_SECS:-15}" != 0 ]; then
    scripts/fuzz.sh --quick "${MFA_FUZZ_SECS:-15}"
fi
cargo test --workspace --no-fail-fast "$@"
