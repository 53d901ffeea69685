//! The frame codec both sides of the socket run on untrusted bytes: header check, body
//! decode, whole-frame read; and whatever decodes must encode and decode to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_proto::frame;
use mfa_proto::{ClientMsg, Operation, ServerMsg};
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<4>() {
        let _ = frame::body_len(*header);
    }
    let _ = frame::read_frame::<_, ClientMsg>(&mut Cursor::new(data));
    let _ = frame::read_frame::<_, ServerMsg>(&mut Cursor::new(data));
    let _ = frame::decode::<ServerMsg>(data);
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
