//! Frames: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated, and buffers
//! that held a frame are zeroized, since answers carry passcodes.

use crate::MAX_FRAME;
use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

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

/// Makes room in `out` for `extra` more bytes the way [`Growing`] does: into a new buffer
/// (twice as large, or what is needed), the old one zeroized.
fn reserve_zeroizing(out: &mut Zeroizing<Vec<u8>>, extra: usize) {
    let need = out.len().saturating_add(extra);
    grow_zeroizing(out, need, usize::MAX);
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

/// Frames as they come off a stream in pieces: each [`Inbox::read_from`] takes in what one
/// read gives, and [`Inbox::take`] hands out the first whole message, however the frames
/// were split or joined by the reads. The buffer is zeroized when it grows and when the
/// inbox is dropped. A header announcing a body over [`MAX_FRAME`] is an error as soon as
/// the header is in, before the body is read.
#[derive(Default)]
pub struct Inbox {
    buf: Zeroizing<Vec<u8>>,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Bytes read and not yet handed out as a message.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The first whole message in the inbox, if one is there; the bytes it was made of
    /// leave the inbox even when they do not decode (the error says why).
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(header) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = body_len(*header)?;
        let Some(body) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        let msg = decode(body);
        self.buf.drain(..4 + len);
        Ok(Some(msg?))
    }

    /// One `read` of at most `max` bytes from `r` onto the end of the inbox: the read's
    /// own result (0 at the end of the stream).
    pub fn read_from<R: Read>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        let had = self.buf.len();
        reserve_zeroizing(&mut self.buf, max);
        self.buf.resize(had + max, 0);
        let read = r.read(&mut self.buf[had..]);
        let got = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(had + got);
        read
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

    #[test]
    fn an_inbox_hands_out_each_frame_whole_once_however_the_reads_fall() {
        let msgs = [
            ServerMsg::Info {
                text: "x".repeat(2 * FIRST_ROOM),
            },
            ServerMsg::KeepAlive,
            ServerMsg::Prompt {
                text: "Passcode: ".into(),
                echo: false,
            },
        ];
        let mut stream = Zeroizing::new(Vec::new());
        for m in &msgs {
            encode_into(m, &mut stream).unwrap();
        }
        for size in [1, 3, 4, 5, 700, stream.len()] {
            let mut src = Cursor::new(&stream[..]);
            let mut inbox = Inbox::new();
            let mut got = Vec::new();
            loop {
                while let Some(m) = inbox.take::<ServerMsg>().unwrap() {
                    got.push(m);
                }
                if inbox.read_from(&mut src, size).unwrap() == 0 {
                    break;
                }
            }
            assert_eq!(got, msgs, "reads of {size} bytes");
            assert!(inbox.is_empty());
        }
    }

    #[test]
    fn an_inbox_refuses_an_oversized_frame_from_its_header_alone() {
        let mut inbox = Inbox::new();
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        inbox.read_from(&mut Cursor::new(&header[..3]), 64).unwrap();
        assert!(matches!(inbox.take::<ServerMsg>(), Ok(None)));
        inbox.read_from(&mut Cursor::new(&header[3..]), 64).unwrap();
        assert!(matches!(
            inbox.take::<ServerMsg>(),
            Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
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
