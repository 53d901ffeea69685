//! The memory a waiting login holds. Each connection is one task, and a task holds its whole
//! future, whose size is fixed at compile time by the largest state of everything awaited
//! inline: an uncommon, deep path (the portal's requests, an admin command, Duo) awaited in
//! place would be paid for by every connection, a thousand pending push approvals included.
//! The conversation's operations are boxed where they start, so a connection's task holds
//! only what the conversation itself needs, and a login only what its path may need.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::Operation;
use mfa_test_support::{TestDaemon, ssh};
use mfad::conn::{Conn, ScriptDialogue, Timeouts};
use std::time::Duration;

/// Bytes a connection's task may hold for its conversation (968 in release and test builds
/// with Rust 1.95; 19,296 before the operations were boxed).
const MOST: usize = 2 * 1024;

fn conn() -> Conn {
    let timeouts = Timeouts {
        hello: Duration::from_secs(1),
        answer: Duration::from_secs(1),
        keepalive: Duration::from_secs(1),
    };
    Conn::over(Box::new(ScriptDialogue::answering(&[])), 0, timeouts)
}

#[test]
fn a_connection_task_holds_a_small_future_whatever_the_operation_may_become() {
    let d = TestDaemon::start(|_| {});
    let daemon = d.daemon();
    // What the socket server spawns for each connection (never polled here).
    let serve = daemon.serve(conn());
    let size = std::mem::size_of_val(&serve);
    assert!(size <= MOST, "a connection's future is {size} bytes");
    drop(serve);
    let mut c = conn();
    let login = daemon.converse(&mut c, Operation::Authenticate(ssh("alice")));
    let size = std::mem::size_of_val(&login);
    assert!(size <= MOST, "a login's conversation is {size} bytes");
}
