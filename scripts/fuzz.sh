#!/usr/bin/env bash
# Fuzzes the parsers that take untrusted or hand-typed input, with cargo-fuzz (libFuzzer):
#   frame   the socket's frame codec (mfa-proto): header, body, whole-frame read, round trip
#   config  mfad.toml (mfad::Config::parse): a Config or an error naming the file, never a panic
#   secret  token secrets (mfad::factor::parse_secret) and the otpauth:// URI made from them
#
#   scripts/fuzz.sh              each target for 20 s: the brief run
#   scripts/fuzz.sh 600          each target for 600 s
#   scripts/fuzz.sh 60 config    one target for 60 s
#
# scripts/test.sh runs it for 15 s per target (the sanitizer build takes about 6 minutes on
# this 2-core machine). cargo-fuzz needs nightly-only rustc flags (-Z sanitizer=address and
# others). On the stable toolchain this script sets RUSTC_BOOTSTRAP=1, which lets stable
# rustc accept them (the same compiler, its unstable gates lifted for this build only).
# Each run prints libFuzzer's final stats; a crash leaves its input in fuzz/artifacts/.
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

secs=${1:-20}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(frame config secret)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "fuzz.sh: $t for ${secs}s"
    log="target/fuzz-$t.log"
    mkdir -p target
    if cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
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
