//! A stand-in ntfy server on 127.0.0.1 that takes every publish, answers like ntfy, and
//! counts them: pushes sent is pending approvals made.

use crate::BenchError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct FakeNtfy {
    pub port: u16,
    pub published: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeNtfy {
    pub fn start() -> Result<FakeNtfy, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let published = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&published), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let p = Arc::clone(&p);
                let _ = std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || serve(stream, &p));
            }
        });
        Ok(FakeNtfy {
            port,
            published,
            stop,
        })
    }

    pub fn count(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }
}

impl Drop for FakeNtfy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// HTTP/1.1 keep-alive: read each request (headers, then Content-Length bytes), answer 200.
fn serve(stream: TcpStream, published: &AtomicUsize) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first && line.trim().is_empty() {
                continue;
            }
            first = false;
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        published.fetch_add(1, Ordering::SeqCst);
        let reply = br#"{"id":"bench","event":"message"}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(reply).is_err() {
            return;
        }
    }
}
