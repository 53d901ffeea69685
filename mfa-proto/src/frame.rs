//! Frames: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated, and buffers
//! that held a frame are zeroized, since answers carry passcodes.

use crate::MAX_FRAME;
use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    TimedOut,
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("i/o error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => FrameError::Closed,
            _ => FrameError::Io(e),
        }
    }
}

/// Room a new frame buffer starts with: most frames (a hello, a prompt, a verdict) fit.
pub const FIRST_ROOM: usize = 512;

/// Serializes `msg` into a complete frame (header and body).
pub fn encode<T: Serialize>(msg: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut out = Zeroizing::new(Vec::with_capacity(FIRST_ROOM));
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Appends `msg`'s frame (header and body) to `out`, serialized in place: no copy of the
/// body is made, and a buffer `out` outgrows is zeroized before it is freed (a `Vec`
/// that grows by itself frees its old buffer as it is, passcode and all). A body over
/// [`MAX_FRAME`] is an error, found before it is all written; `out` is then as it was.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Zeroizing<Vec<u8>>) -> Result<(), FrameError> {
    let start = out.len();
    let mut writer = Growing {
        out,
        limit: start + 4 + MAX_FRAME,
        refused: 0,
    };
    writer.write_all(&[0; 4])?;
    let written = serde_json::to_writer(&mut writer, msg);
    let refused = writer.refused;
    if let Err(e) = written {
        out.truncate(start);
        return Err(match e.io_error_kind() {
            // At least this long: the rest was never serialized.
            Some(io::ErrorKind::FileTooLarge) => FrameError::TooLarge(refused - start - 4),
            _ => FrameError::Malformed(e.to_string()),
        });
    }
    let len = out.len() - start - 4;
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// A zeroizing buffer written to by serde: it grows into a new buffer (twice as large, or
/// what the write needs) and zeroizes the old one; it refuses to grow past `limit` bytes.
struct Growing<'a> {
    out: &'a mut Zeroizing<Vec<u8>>,
    limit: usize,
    /// The length a refused write would have made.
    refused: usize,
}

impl Write for Growing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let need = self.out.len() + buf.len();
        if need > self.limit {
            self.refused = need;
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        grow_zeroizing(self.out, need, self.limit);
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Gives `out` a capacity of at least `need` (`limit` caps how far it doubles): a new
/// buffer, into which the old one is copied and which is zeroized as it is dropped.
fn grow_zeroizing(out: &mut Zeroizing<Vec<u8>>, need: usize, limit: usize) {
    if need > out.capacity() {
        let room = need.max(out.capacity().saturating_mul(2).min(limit));
        let mut bigger = Zeroizing::new(Vec::with_capacity(room));
        bigger.extend_from_slice(out);
        // The old buffer is dropped here, and zeroized as it is.
        *out = bigger;
    }
}

/// Checks a frame header and returns the body length it announces.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Parses a frame body. Bodies must be UTF-8 JSON of the expected shape.
///
/// The error names a fixed class and a position only: serde_json's own message quotes the
/// peer's input (an unknown variant, a bad string), newlines and escapes included, and this
/// text ends up in logs.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| {
        let class = match e.classify() {
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Io => "unreadable",
        };
        FrameError::Malformed(format!(
            "{class} at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// Frames as they come off a stream in pieces, by both ends of mfad's socket (mfad reading
/// a client, pam_mfa reading mfad): the bytes received go into [`Inbox::room`] and are
/// counted in with [`Inbox::filled`]; [`Inbox::take`] hands out the next whole message,
/// however the reads split or joined the frames.
///
/// The bytes not yet taken are `buf[start..end]`. They are zeroized as they are taken
/// (answers carry passcodes), and the buffer is given back when nothing is left in it (a
/// conversation waiting for a phone holds none). Every byte outside `start..end` is zero:
/// the buffer starts zeroed, reads write only past `end`, and a frame's bytes are zeroized
/// as it is taken out; so only `start..end` needs clearing when the inbox goes (not its
/// whole capacity, byte by byte, as `Zeroizing` would, for every frame).
///
/// A header announcing an empty body or one over [`MAX_FRAME`] is an error as soon as the
/// header is in, before any room is made for the body. The buffer never holds more than
/// the larger of one frame and its first room.
pub struct Inbox {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
    /// What the buffer starts with, and the least room a read is given.
    first_room: usize,
}

impl Inbox {
    /// An inbox whose buffer starts with `first_room` bytes (at least one): enough for the
    /// frames usually received together to come in one read.
    pub fn new(first_room: usize) -> Inbox {
        Inbox {
            buf: None,
            start: 0,
            end: 0,
            first_room: first_room.max(1),
        }
    }

    /// The size of the buffer held (0: none).
    pub fn buffer_len(&self) -> usize {
        self.buf.as_ref().map_or(0, Vec::len)
    }

    /// The next whole frame, decoded and taken out, if one is there. Its bytes leave the
    /// inbox, zeroized, even when they do not decode (the error says why).
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        self.check_zeroed();
        let Some(buf) = &mut self.buf else {
            return Ok(None);
        };
        let have = &buf[self.start..self.end];
        let Some(header) = have.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = body_len(*header)?;
        if have.len() < 4 + len {
            return Ok(None);
        }
        let (at, end) = (self.start + 4, self.start + 4 + len);
        let msg = decode(&buf[at..end]);
        buf[self.start..end].zeroize();
        self.start = end;
        if self.start == self.end {
            self.buf = None;
            self.start = 0;
            self.end = 0;
        }
        msg.map(Some)
    }

    /// Room for the rest of the frame being received (at least one byte), to be counted in
    /// with [`Inbox::filled`]: the bytes kept are moved to the front, into a larger buffer
    /// if the frame needs one (the old one zeroized where they were).
    pub fn room(&mut self) -> Result<&mut [u8], FrameError> {
        self.check_zeroed();
        let have = self.end - self.start;
        let header = self
            .buf
            .as_ref()
            .and_then(|b| b[self.start..self.end].first_chunk::<4>().copied());
        // At least one byte more than is kept, whatever the first room (a header not all in
        // yet may already fill a small one).
        let need = match header {
            Some(h) => (4 + body_len(h)?).max(self.first_room),
            None => self.first_room,
        }
        .max(have + 1);
        let first_room = self.first_room;
        let buf = self.buf.get_or_insert_with(|| vec![0; first_room]);
        // The frame cannot fit from where it starts (or no room is left at all): moved to
        // the front of a buffer it fits in, and zeroized where it was.
        if buf.len() - self.start < need || self.end == buf.len() {
            let mut fresh = vec![0; need.max(buf.len())];
            fresh[..have].copy_from_slice(&buf[self.start..self.end]);
            buf[self.start..self.end].zeroize();
            *buf = fresh;
            self.start = 0;
            self.end = have;
        }
        Ok(&mut buf[self.end..])
    }

    /// Counts in `n` bytes written at the start of the last [`Inbox::room`]. More than that
    /// room held is a caller's bug: counted in up to the room's end only.
    pub fn filled(&mut self, n: usize) {
        let size = self.buffer_len();
        debug_assert!(self.end + n <= size, "filled past the room given");
        self.end = (self.end + n).min(size);
    }

    /// What the zeroizing on drop relies on (checked in builds with debug assertions: the
    /// tests and the fuzz targets): nothing outside the bytes kept but zeros. Past the kept
    /// bytes only the next 4 KiB are looked at, where a stray write of a read would land:
    /// a header may make room for a body of up to [`MAX_FRAME`] bytes, and scanning all of
    /// it at each read of a byte made this check, not the inbox, the fuzz target's cost.
    fn check_zeroed(&self) {
        #[cfg(debug_assertions)]
        if let Some(buf) = &self.buf {
            let after = &buf[self.end..buf.len().min(self.end + ZEROS.len())];
            assert!(
                all_zero(&buf[..self.start]) && all_zero(after),
                "an inbox's buffer holds bytes outside those kept"
            );
        }
    }
}

/// Zeros to compare with (`memcmp`, fast in any build, where a loop over bytes is not in
/// an unoptimized one).
#[cfg(debug_assertions)]
static ZEROS: [u8; 4096] = [0; 4096];

#[cfg(debug_assertions)]
fn all_zero(bytes: &[u8]) -> bool {
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(buf) = &mut self.buf {
            buf[self.start..self.end].zeroize();
        }
    }
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = body_len(header)?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsg, ServerMsg};
    use std::io::Cursor;

    #[test]
    fn a_frame_round_trips() {
        let msg = ServerMsg::Prompt {
            text: "Passcode: ".into(),
            echo: false,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg).unwrap();
        assert_eq!(&buf[..4], &((buf.len() - 4) as u32).to_be_bytes());
        let back: ServerMsg = read_frame(&mut Cursor::new(buf)).unwrap();
        assert_eq!(back, msg);
    }

    /// Feeds `stream` to `inbox` in reads of the sizes `piece` gives, and takes every
    /// message out as soon as it is whole.
    fn through_inbox(
        inbox: &mut Inbox,
        stream: &[u8],
        mut piece: impl FnMut() -> usize,
    ) -> Vec<ServerMsg> {
        let (mut sent, mut got) = (0, Vec::new());
        loop {
            while let Some(msg) = inbox.take::<ServerMsg>().unwrap() {
                got.push(msg);
            }
            if sent == stream.len() {
                return got;
            }
            let room = inbox.room().unwrap();
            let n = piece().min(room.len()).min(stream.len() - sent);
            assert!(n > 0, "room for more, and more to send");
            room[..n].copy_from_slice(&stream[sent..sent + n]);
            inbox.filled(n);
            sent += n;
        }
    }

    #[test]
    fn frames_cut_anywhere_come_out_of_an_inbox_whole_and_in_order() {
        // Frames of many sizes (some larger than the first room), their bytes delivered in
        // pieces of pseudo-random sizes, as reads of a socket may give them. (The inbox
        // checks at each step, in this build, that no byte outside those kept is left.)
        let texts: Vec<String> = (0..40)
            .map(|i| {
                char::from(b'a' + (i % 26) as u8)
                    .to_string()
                    .repeat((i * 97) % 3000)
            })
            .collect();
        let mut stream = Zeroizing::new(Vec::new());
        for t in &texts {
            encode_into(&ServerMsg::Info { text: t.clone() }, &mut stream).unwrap();
        }
        let want: Vec<ServerMsg> = texts
            .iter()
            .map(|t| ServerMsg::Info { text: t.clone() })
            .collect();
        for seed in [1u64, 7, 12345] {
            for first_room in [1, 1024, 4096] {
                let mut inbox = Inbox::new(first_room);
                let mut rng = seed;
                let got = through_inbox(&mut inbox, &stream, || {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    1 + (rng >> 33) as usize % 700
                });
                assert_eq!(got, want, "seed {seed}, first room {first_room}");
                assert_eq!(inbox.buffer_len(), 0, "nothing left, nothing kept");
            }
        }
        // A byte at a time, and the whole stream in one read.
        for size in [1, stream.len()] {
            let mut inbox = Inbox::new(1024);
            assert_eq!(through_inbox(&mut inbox, &stream, || size), want);
        }
    }

    #[test]
    fn an_inbox_refuses_an_empty_or_oversized_frame_from_its_header_alone() {
        for (header, too_large) in [
            (((MAX_FRAME + 1) as u32).to_be_bytes(), true),
            ([0; 4], false),
        ] {
            let mut inbox = Inbox::new(64);
            inbox.room().unwrap()[..3].copy_from_slice(&header[..3]);
            inbox.filled(3);
            assert!(matches!(inbox.take::<ServerMsg>(), Ok(None)));
            inbox.room().unwrap()[..1].copy_from_slice(&header[3..]);
            inbox.filled(1);
            let e = inbox.take::<ServerMsg>().unwrap_err();
            assert!(
                if too_large {
                    matches!(e, FrameError::TooLarge(n) if n == MAX_FRAME + 1)
                } else {
                    matches!(e, FrameError::Empty)
                },
                "{e}"
            );
            assert!(inbox.room().is_err(), "no room made for the announced body");
            assert_eq!(inbox.buffer_len(), 64);
        }
    }

    #[test]
    fn frames_appended_to_one_buffer_read_back_in_order() {
        let long = "x".repeat(3 * FIRST_ROOM);
        let msgs = [
            ServerMsg::Info { text: long.clone() },
            ServerMsg::Prompt {
                text: "Passcode: ".into(),
                echo: false,
            },
        ];
        let mut out = Zeroizing::new(Vec::new());
        for m in &msgs {
            encode_into(m, &mut out).unwrap();
        }
        let mut r = Cursor::new(out.to_vec());
        assert_eq!(read_frame::<_, ServerMsg>(&mut r).unwrap(), msgs[0]);
        assert_eq!(read_frame::<_, ServerMsg>(&mut r).unwrap(), msgs[1]);
        assert_eq!(r.position() as usize, out.len());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_and_leaves_the_buffer_as_it_was() {
        let mut out = Zeroizing::new(Vec::new());
        encode_into(&ServerMsg::KeepAlive, &mut out).unwrap();
        let before = out.to_vec();
        let huge = ServerMsg::Info {
            text: "y".repeat(MAX_FRAME),
        };
        assert!(matches!(
            encode_into(&huge, &mut out),
            Err(FrameError::TooLarge(n)) if n > MAX_FRAME
        ));
        assert_eq!(*out, before);
        // Just under the limit is a frame.
        let fits = ServerMsg::Info {
            text: "y".repeat(MAX_FRAME - r#"{"type":"info","text":""}"#.len()),
        };
        let frame = encode(&fits).unwrap();
        assert_eq!(frame.len(), 4 + MAX_FRAME);
    }

    #[test]
    fn oversized_and_empty_headers_are_refused_before_reading_a_body() {
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame::<_, ClientMsg>(&mut Cursor::new(huge.to_vec())),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame::<_, ClientMsg>(&mut Cursor::new(vec![0, 0, 0, 0])),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn a_malformed_frame_error_never_quotes_the_input() {
        let forged = "hello\nJan  1 00:00:00 host mfad: user=root outcome=allow\u{1b}[2J";
        let body = serde_json::json!({ "type": forged, "version": 2 }).to_string();
        let Err(FrameError::Malformed(text)) = decode::<ClientMsg>(body.as_bytes()) else {
            panic!("a hello of an unknown type was accepted");
        };
        assert_eq!(text, "JSON of the wrong shape at line 1 column 76");
        let Err(FrameError::Malformed(text)) = decode::<ClientMsg>(b"{\"type\":\"x\ny") else {
            panic!("bad JSON was accepted");
        };
        assert!(!text.contains('\n') && !text.contains('y'), "{text}");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let mut bad = 5u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"\xff\xfe{}x");
        assert!(matches!(
            read_frame::<_, ClientMsg>(&mut Cursor::new(bad)),
            Err(FrameError::Malformed(_))
        ));
        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<_, ClientMsg>(&mut Cursor::new(short)),
            Err(FrameError::Closed)
        ));
        let wrong_shape = br#"{"type":"nonsense"}"#;
        let mut f = (wrong_shape.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(wrong_shape);
        assert!(matches!(
            read_frame::<_, ClientMsg>(&mut Cursor::new(f)),
            Err(FrameError::Malformed(_))
        ));
    }
}
