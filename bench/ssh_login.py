#!/usr/bin/python3
"""mfa-bench's ssh client: one paramiko login per request line, timed from connect to close.

Reads lines `PORT USER PASSWORD CODE` on stdin; for each, connects to 127.0.0.1:PORT,
authenticates with keyboard-interactive (the password at pam_unix's `Password:` prompt,
CODE at any other prompt), runs `true`, closes, and prints `OK SECONDS` or `FAIL SECONDS
REASON`. One process serves the whole run, so interpreter start-up is never timed.
"""
import socket
import sys
import time

import paramiko


def login(port, user, password, code):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    wanted = [k for k in options.kex if k.startswith("curve25519")]
    if wanted:
        options.kex = wanted
    try:
        transport.start_client(timeout=30)

        def handler(_title, _instructions, prompts):
            return [password if text.strip() == "Password:" else code for text, _echo in prompts]

        transport.auth_interactive(user, handler)
        channel = transport.open_session(timeout=30)
        channel.exec_command("true")
        status = channel.recv_exit_status()
        channel.close()
        if status != 0:
            raise RuntimeError(f"`true` exited {status}")
    finally:
        transport.close()


def main():
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 4:
            print("FAIL 0 bad-request", flush=True)
            continue
        port, user, password, code = int(parts[0]), parts[1], parts[2], parts[3]
        started = time.perf_counter()
        try:
            login(port, user, password, code)
            print(f"OK {time.perf_counter() - started:.6f}", flush=True)
        except Exception as e:  # noqa: BLE001 - any failure is reported, never fatal
            reason = f"{type(e).__name__}:{e}".replace("\n", " ")
            print(f"FAIL {time.perf_counter() - started:.6f} {reason}", flush=True)


if __name__ == "__main__":
    main()
