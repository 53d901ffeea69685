#!/usr/bin/env bash
# Fuzzes the parsers that take untrusted or hand-typed input, with cargo-fuzz (libFuzzer):
#   frame   the socket's frame codec (mfa-proto): header, body, whole-frame read, round trip
#   inbox   the frame reader of both ends of the socket (mfad's of clients, pam_mfa's of
#           mfad): frames split and joined by the reads come out as read one at a time
#           from the whole stream, errors alike; buffer bounded and zeroized
#   config  mfad.toml (mfad::Config::parse): a Config or an error naming the file, never a panic
#   secret  token secrets (mfad::factor::parse_secret) and the otpauth:// URI made from them
#
#   scripts/fuzz.sh              each target for 20 s: the brief run
#   scripts/fuzz.sh 600          each target for 600 s
#   scripts/fuzz.sh 60 config    one target for 60 s
#   scripts/fuzz.sh --quick 15   built without optimizations (what scripts/test.sh runs)
#
# The targets are built optimized by default, with AddressSanitizer and debug assertions:
# about 12 minutes on a 2-core machine, then ~20,000 executions/s. --quick builds them
# unoptimized (same sanitizer, same assertions): about 4 minutes, then 20 to 50 times fewer
# executions per second. scripts/test.sh runs --quick for 15 s per target: in the whole
# suite it checks that the targets build and run clean through their seeds and some
# thousands of mutations; searching deeper is a long optimized run by hand.
# cargo-fuzz needs nightly-only rustc flags (-Z sanitizer=address and
# others). On the stable toolchain this script sets RUSTC_BOOTSTRAP=1, which lets stable
# rustc accept them (the same compiler, its unstable gates lifted for this build only).
# The fuzz crate is a workspace of its own; its Cargo.lock is made from the project's at
# each run, so the targets are built against the dependency versions everything else is
# built and tested with (and no run resolves them afresh from the registry).
# Each run prints libFuzzer's final stats; a crash leaves its input in fuzz/artifacts/.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

build=(-O)
if [ "${1:-}" = --quick ]; then
    build=(--dev)
    shift
fi
secs=${1:-20}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(frame inbox config secret)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
cp ../Cargo.lock Cargo.lock
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "fuzz.sh: $t for ${secs}s"
    log="target/fuzz-$t.log"
    mkdir -p target
    if cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        echo "fuzz.sh: $t: ${execs:-?} executions, no crash"
    else
        status=1
        echo "fuzz.sh: $t FAILED; the end of its log:" >&2
        tail -n 40 "$log" >&2
    fi
done
exit "$status"
