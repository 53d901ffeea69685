//! The blocking client used by pam_mfa, mfa and mfa-login-prompt.
//!
//! Every connect, read and write carries a timeout, so a stuck or dead daemon costs the
//! caller at most that long. [`run_conversation`] is the whole relay loop: the daemon
//! drives, the [`Conversation`] shows text and asks the user.

use crate::frame::{self, FrameError};
use crate::{ClientMsg, MAX_ANSWER, Operation, Outcome, PROTOCOL_VERSION, ServerMsg};
use socket2::{Domain, SockAddr, Socket, Type};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to mfad at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mfad did not answer in time")]
    TimedOut,
    #[error("mfad closed the connection")]
    Closed,
    #[error("mfad sent a message this client cannot read: {0}")]
    Protocol(String),
    #[error("mfad cannot serve this request: {0}")]
    Unavailable(String),
    #[error("i/o error talking to mfad: {0}")]
    Io(std::io::Error),
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => ClientError::Closed,
            FrameError::TimedOut => ClientError::TimedOut,
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// One connection to mfad.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects with `connect_timeout`; every later read and write is bounded by `io_timeout`.
    pub fn connect(
        path: &Path,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let addr = SockAddr::unix(path).map_err(connect_err)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(connect_err)?;
        socket
            .connect_timeout(&addr, connect_timeout)
            .map_err(connect_err)?;
        let stream: UnixStream = socket.into();
        stream
            .set_read_timeout(Some(io_timeout))
            .map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(ClientError::Io)?;
        Ok(Client { stream })
    }

    pub fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        Ok(frame::write_frame(&mut self.stream, msg)?)
    }

    pub fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        Ok(frame::read_frame(&mut self.stream)?)
    }
}

/// How a client shows the daemon's messages and asks its user.
pub trait Conversation {
    fn info(&mut self, text: &str);
    fn error(&mut self, text: &str);
    /// Returns `None` when the user cannot be asked (no terminal, conversation failed).
    fn prompt(&mut self, text: &str, echo: bool) -> Option<Zeroizing<String>>;
}

/// Cuts an answer that no passcode could be to just over [`MAX_ANSWER`] bytes, so that the
/// daemon sees it, refuses it as too long, and the frame limit is never the reason to fail.
fn bound_answer(answer: Zeroizing<String>) -> Zeroizing<String> {
    if answer.len() <= MAX_ANSWER {
        return answer;
    }
    let mut end = MAX_ANSWER + 1;
    while !answer.is_char_boundary(end) {
        end += 1;
    }
    Zeroizing::new(answer[..end].to_string())
}

/// Runs one whole conversation: says hello with `op`, then relays until the daemon is done.
pub fn run_conversation(
    client: &mut Client,
    op: Operation,
    conv: &mut dyn Conversation,
) -> Result<Outcome, ClientError> {
    client.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        op,
    })?;
    loop {
        match client.recv()? {
            ServerMsg::Info { text } => conv.info(&text),
            ServerMsg::Error { text } => conv.error(&text),
            ServerMsg::Prompt { text, echo } => {
                let answer = conv.prompt(&text, echo).map(bound_answer);
                client.send(&ClientMsg::Answer { text: answer })?;
            }
            ServerMsg::Done { outcome } => return Ok(outcome),
            ServerMsg::Unavailable { reason } => return Err(ClientError::Unavailable(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_answers_are_cut_just_past_the_limit() {
        let a = bound_answer(Zeroizing::new("7".repeat(100_000)));
        assert_eq!(a.len(), MAX_ANSWER + 1);
        let b = bound_answer(Zeroizing::new("é".repeat(MAX_ANSWER)));
        assert!(b.len() > MAX_ANSWER && b.len() <= MAX_ANSWER + 2);
        let c = bound_answer(Zeroizing::new("123456".into()));
        assert_eq!(c.as_str(), "123456");
    }
}
