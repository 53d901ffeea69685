//! The reader of frames both ends of mfad's socket run (mfa-proto `frame::Inbox`: mfad
//! reading what any local user's process sends it, pam_mfa reading mfad): frames coming
//! off the socket split and joined however the reads fall must come out as the same
//! messages, and end on the same error, as when they are read one frame at a time from the
//! whole stream (`frame::read_frame`); the buffer never holds more than one frame or its
//! first room, whichever is larger; and (checked by the inbox itself in this build, which
//! has debug assertions) no byte outside those not yet taken is left unzeroized.
//!
//! Input: one byte `n` (bits 0-3: `n % 16 + 1` bytes of read sizes follow, each `1..=256`,
//! cycled; bit 4: the stream is of clients' messages, else of mfad's; bits 5-6: the first
//! room), then the read sizes, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_proto::frame::{self, FrameError, Inbox};
use mfa_proto::{ClientMsg, MAX_FRAME, ServerMsg};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::io::Cursor;

/// An error as the caller tells them apart (and the text it would log).
fn class(e: &FrameError) -> String {
    match e {
        FrameError::Io(io) => format!("io {:?}", io.kind()),
        other => other.to_string(),
    }
}

fn check<T: DeserializeOwned + PartialEq + Debug>(stream: &[u8], sizes: &[u8], first_room: usize) {
    let mut whole = Cursor::new(stream);
    let (mut sent, mut reads) = (0, 0);
    let mut inbox = Inbox::new(first_room);
    loop {
        let expected = frame::read_frame::<_, T>(&mut whole);
        let got = loop {
            match inbox.take::<T>() {
                Ok(Some(msg)) => break Ok(msg),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if sent == stream.len() {
                // What a reader reports for a hang-up, mid-frame or between frames.
                break Err(FrameError::Closed);
            }
            let room = match inbox.room() {
                Ok(room) => room,
                Err(e) => break Err(e),
            };
            let size = usize::from(sizes[reads % sizes.len()]) + 1;
            reads += 1;
            let n = size.min(room.len()).min(stream.len() - sent);
            assert!(n > 0, "a room of no bytes");
            room[..n].copy_from_slice(&stream[sent..sent + n]);
            inbox.filled(n);
            sent += n;
            assert!(
                inbox.buffer_len() <= first_room.max(4 + MAX_FRAME),
                "a buffer of {} bytes",
                inbox.buffer_len()
            );
        };
        match (expected, got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!(class(&a), class(&b));
                return;
            }
            (a, b) => panic!("whole stream: {a:?}; in pieces: {b:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(n % 16) + 1;
    if rest.len() < count {
        return;
    }
    let (sizes, stream) = rest.split_at(count);
    let first_room = [1, 64, 1024, 4096][usize::from(n >> 5) % 4];
    if n & 0x10 != 0 {
        check::<ClientMsg>(stream, sizes, first_room);
    } else {
        check::<ServerMsg>(stream, sizes, first_room);
    }
});
