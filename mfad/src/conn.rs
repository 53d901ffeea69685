//! One client connection: framed messages with a timeout on every read and write, and the
//! caller's uid as the kernel reports it (SO_PEERCRED).

use mfa_proto::frame::{self, FrameError};
use mfa_proto::{ClientMsg, Outcome, ServerMsg};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;
use zeroize::Zeroizing;

/// How long a client may take to say hello, and any write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("client sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("client broke the protocol: {0}")]
    Protocol(&'static str),
}

pub struct Conn {
    stream: UnixStream,
    answer_timeout: Duration,
}

impl Conn {
    pub fn new(stream: UnixStream, answer_timeout: Duration) -> Self {
        Conn {
            stream,
            answer_timeout,
        }
    }

    /// The uid of the process at the other end, from the kernel.
    pub fn peer_uid(&self) -> std::io::Result<u32> {
        Ok(self.stream.peer_cred()?.uid())
    }

    async fn read_msg(&mut self, limit: Duration) -> Result<ClientMsg, ConnError> {
        let read = async {
            let mut header = [0u8; 4];
            self.stream
                .read_exact(&mut header)
                .await
                .map_err(FrameError::from)?;
            let len = frame::body_len(header)?;
            let mut body = Zeroizing::new(vec![0u8; len]);
            self.stream
                .read_exact(&mut body)
                .await
                .map_err(FrameError::from)?;
            Ok::<_, ConnError>(frame::decode(&body)?)
        };
        timeout(limit, read)
            .await
            .map_err(|_| ConnError::TimedOut(limit))?
    }

    pub async fn read_hello(&mut self) -> Result<ClientMsg, ConnError> {
        self.read_msg(IO_TIMEOUT).await
    }

    pub async fn send(&mut self, msg: &ServerMsg) -> Result<(), ConnError> {
        let bytes = frame::encode(msg)?;
        timeout(IO_TIMEOUT, self.stream.write_all(&bytes))
            .await
            .map_err(|_| ConnError::TimedOut(IO_TIMEOUT))?
            .map_err(FrameError::from)?;
        Ok(())
    }

    pub async fn info(&mut self, text: impl Into<String>) -> Result<(), ConnError> {
        self.send(&ServerMsg::Info { text: text.into() }).await
    }

    /// Shows text that holds a secret (a new TOTP secret, bypass codes), then wipes it.
    pub async fn secret_info(&mut self, text: Zeroizing<String>) -> Result<(), ConnError> {
        let mut msg = ServerMsg::Info {
            text: text.as_str().to_owned(),
        };
        let sent = self.send(&msg).await;
        if let ServerMsg::Info { text } = &mut msg {
            zeroize::Zeroize::zeroize(text);
        }
        sent
    }

    pub async fn error(&mut self, text: impl Into<String>) -> Result<(), ConnError> {
        self.send(&ServerMsg::Error { text: text.into() }).await
    }

    pub async fn done(&mut self, outcome: Outcome) -> Result<(), ConnError> {
        self.send(&ServerMsg::Done { outcome }).await
    }

    pub async fn unavailable(&mut self, reason: impl Into<String>) -> Result<(), ConnError> {
        self.send(&ServerMsg::Unavailable {
            reason: reason.into(),
        })
        .await
    }

    /// Asks the user; `None` when the client could not ask.
    pub async fn prompt(
        &mut self,
        text: impl Into<String>,
        echo: bool,
    ) -> Result<Option<Zeroizing<String>>, ConnError> {
        self.send(&ServerMsg::Prompt {
            text: text.into(),
            echo,
        })
        .await?;
        self.answer().await
    }

    /// Reads the answer to a prompt already sent, waiting at most the answer timeout.
    pub async fn answer(&mut self) -> Result<Option<Zeroizing<String>>, ConnError> {
        match self.read_msg(self.answer_timeout).await? {
            ClientMsg::Answer { text } => Ok(text),
            ClientMsg::Hello { .. } => {
                Err(ConnError::Protocol("a second hello instead of an answer"))
            }
        }
    }
}
