//! The frame codec both sides of the socket run on untrusted bytes: header check, body
//! decode, whole-frame read; and whatever decodes must encode and decode to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_proto::frame;
use mfa_proto::{ClientMsg, Operation, ServerMsg};
use std::io::Cursor;
use zeroize::Zeroizing;

/// ClientMsg as serde's derived reader reads it: the reference for ClientMsg's own reader
/// (mfa-proto/src/client_msg.rs), which must agree with it on every JSON object.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Derived {
    Hello { version: u32, op: Operation },
    Answer { text: Option<Zeroizing<String>> },
}

impl From<Derived> for ClientMsg {
    fn from(d: Derived) -> ClientMsg {
        match d {
            Derived::Hello { version, op } => ClientMsg::Hello { version, op },
            Derived::Answer { text } => ClientMsg::Answer { text },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<4>() {
        let _ = frame::body_len(*header);
    }
    let _ = frame::read_frame::<_, ClientMsg>(&mut Cursor::new(data));
    let _ = frame::read_frame::<_, ServerMsg>(&mut Cursor::new(data));
    let _ = frame::decode::<ServerMsg>(data);
    // On a JSON object (the only shape a client sends; the derived reader also took an
    // array, tag first), the two readers agree on whether it is a message and on which.
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data).is_ok() {
        let own = frame::decode::<ClientMsg>(data).ok();
        let derived = serde_json::from_slice::<Derived>(data).ok().map(ClientMsg::from);
        assert_eq!(own, derived, "{}", String::from_utf8_lossy(data));
    }
    if let Ok(msg) = frame::decode::<ClientMsg>(data) {
        if let ClientMsg::Hello { op, .. } = &msg {
            // What mfad logs about a request must never fail on odd text.
            let _ = op.safe_string();
            if let Operation::Authenticate(ctx) = op {
                let _ = mfa_proto::check_user_name(&ctx.user);
            }
        }
        if let Ok(bytes) = frame::encode(&msg) {
            let back: ClientMsg = frame::read_frame(&mut Cursor::new(&bytes[..]))
                .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}"));
            assert_eq!(back, msg);
        }
    }
});
