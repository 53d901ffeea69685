#!/usr/bin/env bash
# A sandboxed demo of mfa on this machine: mfad on SQLite in a temp dir, a private sshd on
# 127.0.0.1:2222 (PAM service sshd-mfademo: password, then pam_mfa), and a demo user
# `mfademo` enrolled through the real `mfa enroll totp`. Nothing outside the temp dir, the
# demo user and /etc/pam.d/sshd-mfademo is touched, and all of it is removed on exit.
#
#   sudo scripts/demo.sh            start; print the password, TOTP secret, QR code and the
#                                   ssh line; show mfad's decisions until Ctrl-C
#   sudo scripts/demo.sh --check    log in once with a scripted ssh client, stop, exit 0/1
#
# Options: --port N (default 2222), --no-build (use the binaries already in target/debug).
set -euo pipefail

PORT=2222
CHECK=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --check) CHECK=1 ;;
        --no-build) BUILD=0 ;;
        --port) PORT="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DEMO_USER=mfademo
DEMO_PASSWORD='mfa-demo-password'
DEMO_GECOS='mfa demo user (scripts/demo.sh)'
SERVICE=sshd-mfademo
PAM_FILE=/etc/pam.d/$SERVICE

say() { printf '%s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it creates a user, a PAM service and starts sshd): sudo $0 $*"

if [ "$BUILD" = 1 ]; then
    scripts/deps.sh
    # shellcheck disable=SC1091
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    cargo build --workspace
fi
BIN="$ROOT/target/debug"
for f in mfad mfa libpam_mfa.so; do
    [ -f "$BIN/$f" ] || die "$BIN/$f is missing; run without --no-build"
done
for t in oathtool setpriv flock /usr/sbin/sshd ssh; do
    command -v "$t" >/dev/null || die "$t is missing; run scripts/deps.sh"
done

# One demo at a time: it owns the user mfademo and the PAM service sshd-mfademo.
LOCK=/run/mfa-demo.lock
exec 9>"$LOCK"
flock -n 9 || die "another demo is running (it holds $LOCK); stop it first"

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$PORT (another demo?); stop it or use --port"
fi
if getent passwd "$DEMO_USER" >/dev/null; then
    if [ "$(getent passwd "$DEMO_USER" | cut -d: -f5)" = "$DEMO_GECOS" ]; then
        say "Removing the demo user left by an earlier demo."
        userdel -f -r "$DEMO_USER" 2>/dev/null || true
    else
        die "a user $DEMO_USER exists and was not made by this demo; not touching it"
    fi
fi

WORK="$(mktemp -d /tmp/mfa-demo.XXXXXX)"
chmod 0755 "$WORK"
MFAD_PID=
SSHD_PID=
TAIL_PID=
USER_MADE=0

cleanup() {
    set +e
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null
    [ -n "$MFAD_PID" ] && kill "$MFAD_PID" 2>/dev/null && wait "$MFAD_PID" 2>/dev/null
    rm -f "$PAM_FILE"
    if [ "$USER_MADE" = 1 ]; then
        for _ in 1 2 3 4 5; do
            userdel -r "$DEMO_USER" 2>/dev/null && break
            getent passwd "$DEMO_USER" >/dev/null || break
            sleep 0.5
        done
        getent passwd "$DEMO_USER" >/dev/null && userdel -f -r "$DEMO_USER" 2>/dev/null
    fi
    rm -rf "$WORK"
    rm -f "$LOCK"
    say "Demo stopped and cleaned up."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Private copies: a rebuild must not overwrite a module that sshd has mapped, and the demo
# user must be able to run mfa wherever this checkout lives.
mkdir -p -m 0755 "$WORK/bin"
cp "$BIN/mfad" "$BIN/mfa" "$BIN/libpam_mfa.so" "$WORK/bin/"
SOCKET="$WORK/run/mfad.sock"

cat > "$WORK/mfad.toml" <<TOML
# mfad config of the demo (see conf/mfad.toml for every key).
socket = "$SOCKET"
database = "$WORK/lib/mfa.db"
store_key = "$WORK/store.key"
issuer = "mfa-demo"
unenrolled = "deny"
max_attempts = 3

[lockout]
max_failures = 10
duration = 3600

[log]
# The demo shows decisions on the terminal instead of sending them to syslog.
syslog = false
level = "info"
TOML

"$WORK/bin/mfad" --config "$WORK/mfad.toml" --foreground >"$WORK/mfad.log" 2>&1 &
MFAD_PID=$!
for _ in $(seq 100); do
    [ -S "$SOCKET" ] && break
    kill -0 "$MFAD_PID" 2>/dev/null || { cat "$WORK/mfad.log" >&2; die "mfad exited"; }
    sleep 0.1
done
[ -S "$SOCKET" ] || { cat "$WORK/mfad.log" >&2; die "mfad did not create $SOCKET"; }

useradd -m -s /bin/bash -c "$DEMO_GECOS" "$DEMO_USER"
USER_MADE=1
echo "$DEMO_USER:$DEMO_PASSWORD" | chpasswd

cat > "$PAM_FILE" <<PAM
# PAM service of the mfa demo (scripts/demo.sh): the password, then the second factor.
auth     requisite pam_unix.so
auth     required  $WORK/bin/libpam_mfa.so socket=$SOCKET failmode=secure timeout=30 connect_timeout=2
account  required  pam_unix.so
session  required  pam_unix.so
PAM

mkdir -p -m 0755 /run/sshd
cp /usr/sbin/sshd "$WORK/$SERVICE"
ssh-keygen -q -t ed25519 -N '' -C mfa-demo -f "$WORK/ssh_host_ed25519_key"
cat > "$WORK/sshd_config" <<SSHD
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/ssh_host_ed25519_key
PidFile $WORK/sshd.pid
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication no
AuthenticationMethods keyboard-interactive
PermitRootLogin no
StrictModes no
UseDNS no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
SSHD
: >"$WORK/sshd.log"
# sshd takes its program name as the PAM service: sshd-mfademo.
"$WORK/$SERVICE" -D -f "$WORK/sshd_config" -E "$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 100); do
    grep -q "Server listening" "$WORK/sshd.log" && break
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$WORK/sshd.log" >&2; die "sshd exited"; }
    sleep 0.1
done
grep -q "Server listening" "$WORK/sshd.log" || die "sshd did not start: $(cat "$WORK/sshd.log")"

# Enrol through the real CLI, run as the demo user: read the secret it prints, answer its
# prompt with the current code (oathtool), as a person with an authenticator app would.
as_demo_user() {
    setpriv --reuid="$DEMO_USER" --regid="$DEMO_USER" --init-groups \
        env -i PATH=/usr/bin:/bin HOME="/home/$DEMO_USER" USER="$DEMO_USER" "$@"
}
ENROL_OUT="$WORK/enrol.out"
: >"$ENROL_OUT"
coproc ENROL { cd /tmp && as_demo_user timeout 60 "$WORK/bin/mfa" --socket "$SOCKET" enroll totp 2>&1; }
# Own copies of the coprocess's pipes: bash drops ENROL[] once the coprocess is reaped.
exec {FROM_MFA}<&"${ENROL[0]}" {TO_MFA}>&"${ENROL[1]}"
ENROL_WAIT=$ENROL_PID
SECRET=
while IFS= read -r -t 30 line <&"$FROM_MFA"; do
    printf '%s\n' "$line" >>"$ENROL_OUT"
    case "$line" in
        Secret:*)
            SECRET="$(printf '%s' "${line#Secret:}" | tr -d '[:space:]')"
            printf '%s\n' "$(oathtool --totp -b "$SECRET")" >&"$TO_MFA"
            break
            ;;
    esac
done
exec {TO_MFA}>&-
[ -n "$SECRET" ] || { cat "$ENROL_OUT" >&2; die "mfa enroll totp printed no secret"; }
while IFS= read -r -t 30 line <&"$FROM_MFA"; do
    printf '%s\n' "$line" >>"$ENROL_OUT"
done
exec {FROM_MFA}<&-
wait "$ENROL_WAIT" || { cat "$ENROL_OUT" >&2; die "mfa enroll totp failed"; }
URI="$(grep -o 'otpauth://[^[:space:]]*' "$ENROL_OUT" | head -n1)"

if [ "$CHECK" = 1 ]; then
    # One scripted login through the real ssh client: the password, then the code of the
    # next time step (the current one was spent by the enrolment).
    CODE="$(oathtool --totp -b -N "@$(( $(date +%s) + 30 ))" "$SECRET")"
    mkdir -p "$WORK/client"
    printf '%s\n%s\n' "$DEMO_PASSWORD" "$CODE" >"$WORK/client/answers"
    cat > "$WORK/client/askpass" <<ASKPASS
#!/bin/sh
printf '%s\n' "\$1" >> "$WORK/client/prompts"
n=\$(cat "$WORK/client/count" 2>/dev/null || echo 0); n=\$((n + 1)); echo \$n > "$WORK/client/count"
sed -n "\${n}p" "$WORK/client/answers"
ASKPASS
    chmod 0700 "$WORK/client/askpass"
    set +e
    OUT="$(SSH_ASKPASS="$WORK/client/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 \
        setsid -w timeout 60 ssh -F /dev/null -p "$PORT" \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o PreferredAuthentications=keyboard-interactive -o NumberOfPasswordPrompts=1 \
        -o KexAlgorithms=curve25519-sha256 -o ConnectTimeout=10 \
        "$DEMO_USER@127.0.0.1" 'echo "demo login ok: $(id -un)"' </dev/null 2>"$WORK/client/stderr")"
    STATUS=$?
    set -e
    say "--- prompts the ssh client showed ---"
    cat "$WORK/client/prompts" 2>/dev/null || true
    say "--- ssh stdout ---"
    say "$OUT"
    say "--- ssh stderr ---"
    cat "$WORK/client/stderr"
    say "--- mfad decisions ---"
    grep 'outcome=' "$WORK/mfad.log" || true
    if [ "$STATUS" -eq 0 ] && [ "$OUT" = "demo login ok: $DEMO_USER" ] &&
        grep -q "Two-factor login for $DEMO_USER" "$WORK/client/prompts"; then
        say "demo check: OK (password + TOTP login through sshd -> pam_mfa -> mfad)"
        exit 0
    fi
    say "demo check: FAILED (ssh exit $STATUS)"
    say "--- sshd log ---"
    cat "$WORK/sshd.log"
    exit 1
fi

BYPASS="$("$WORK/bin/mfa" --socket "$SOCKET" admin bypass-codes "$DEMO_USER" |
    awk 'n < 3 && /^[[:space:]]*[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][[:space:]]*$/ {
        gsub(/[[:space:]]/, ""); printf "%s%s", (n ? " " : ""), $0; n++ }')"

say ""
say "================ mfa demo is running ================"
say ""
say "What 'mfa enroll totp' showed the demo user:"
say ""
cat "$ENROL_OUT"
say ""
say "Demo user:      $DEMO_USER"
say "Password:       $DEMO_PASSWORD"
say "TOTP secret:    $SECRET"
say "otpauth URI:    $URI"
say "Bypass codes:   $BYPASS (each works once)"
say ""
say "Scan the QR code above with an authenticator app (or use: oathtool --totp -b $SECRET),"
say "then log in, typing the password and then the 6-digit code:"
say ""
say "    ssh -p $PORT $DEMO_USER@127.0.0.1"
say ""
say "(Each run makes a new host key; if ssh warns that it changed, add"
say " -o UserKnownHostsFile=/dev/null. Each code works once: if told it was used, wait"
say " for the next one.)"
say ""
say "mfad's decisions follow. Press Ctrl-C to stop the demo and remove everything."
say ""
# In the background and waited for, so that a signal to this script alone also ends it.
tail -n 0 -f "$WORK/mfad.log" &
TAIL_PID=$!
wait "$TAIL_PID"
