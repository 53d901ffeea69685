//! pam_mfa's reader of mfad's messages (mfa-proto `frame::Inbox`, under `Client::recv`):
//! frames coming off the socket split and joined however the reads fall must come out as
//! the same messages, and the same errors, as when they are read one frame at a time from
//! the whole stream (`frame::read_frame`); and the inbox never holds more than one frame
//! and one read.
//!
//! Input: one byte `n`, then `n % 16 + 1` bytes giving the sizes of successive reads (each
//! `1..=256`, cycled), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_proto::frame::{self, FrameError, Inbox};
use mfa_proto::{MAX_FRAME, ServerMsg};
use std::io::{Cursor, Read};

/// A stream whose reads give the sizes it is told, in turn.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = usize::from(self.sizes[self.next % self.sizes.len()]) + 1;
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// An error as the caller tells them apart (and the text it would log).
fn class(e: &FrameError) -> String {
    match e {
        FrameError::Io(io) => format!("io {:?}", io.kind()),
        other => other.to_string(),
    }
}

/// The most one `read_from` asks for here: small, so that frames straddle reads.
const MAX_READ: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(n % 16) + 1;
    if rest.len() < count {
        return;
    }
    let (sizes, stream) = rest.split_at(count);
    let mut whole = Cursor::new(stream);
    let mut pieces = Chunked {
        data: stream,
        sizes,
        next: 0,
    };
    let mut inbox = Inbox::new();
    loop {
        let expected = frame::read_frame::<_, ServerMsg>(&mut whole);
        let got = loop {
            match inbox.take::<ServerMsg>() {
                Ok(Some(msg)) => break Ok(msg),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            assert!(
                inbox.len() < 4 + MAX_FRAME,
                "the inbox holds {} bytes and no whole frame",
                inbox.len()
            );
            match inbox.read_from(&mut pieces, MAX_READ) {
                // What Client::recv reports for a hang-up, mid-frame or between frames.
                Ok(0) => break Err(FrameError::Closed),
                Ok(_) => {}
                Err(e) => panic!("the chunked stream does not fail, yet: {e}"),
            }
            assert!(inbox.len() <= 4 + MAX_FRAME + MAX_READ);
        };
        match (expected, got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!(class(&a), class(&b));
                break;
            }
            (a, b) => panic!("whole stream: {a:?}; in pieces: {b:?}"),
        }
    }
});
