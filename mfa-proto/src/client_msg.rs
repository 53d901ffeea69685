//! Reading a [`ClientMsg`] without buffering it first.
//!
//! serde's derived reader for an internally tagged enum cannot know the variant before it
//! has seen the tag, so it first copies the whole object into a buffer of its own and then
//! reads the variant from that; a hello is two such enums deep (`type`, then the
//! operation's `op`), so it was buffered twice. That was 6 % of mfad's instructions under
//! load (callgrind, docs/BENCHMARKS.md). This reader takes the message's fields as they
//! come, and reads a login's operation (`"op": "authenticate"`, the tag first, as every
//! serializer of this crate writes it) straight into its [`AuthContext`]. Any other
//! operation, or a tag that comes later in the object, is read through a
//! `serde_json::Value` and the derived reader of [`Operation`]: the same result, by the
//! slower road.
//!
//! It accepts what the derived reader accepted, in any order of fields: unknown fields are
//! ignored, a missing `type`, `version` or `op` is an error, a missing `text` is `None`.

use crate::{AuthContext, ClientMsg, Operation};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::fmt;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Type,
    Version,
    Op,
    Text,
    #[serde(other)]
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Hello,
    Answer,
}

impl<'de> Deserialize<'de> for ClientMsg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClientMsgVisitor)
    }
}

struct ClientMsgVisitor;

impl<'de> Visitor<'de> for ClientMsgVisitor {
    type Value = ClientMsg;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a client message (an object with a `type`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientMsg, A::Error> {
        let mut kind = None;
        let mut version = Slot::Empty;
        let mut op = Slot::Empty;
        let mut text = Slot::Empty;
        while let Some(field) = map.next_key::<Field>()? {
            let wanted = |of: Kind| kind.is_none_or(|k| k == of);
            match field {
                Field::Type => {
                    if kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    kind = Some(map.next_value::<Kind>()?);
                }
                Field::Version if wanted(Kind::Hello) => {
                    version.fill(&mut map, kind.is_none(), "version", |m| m.next_value())?;
                }
                Field::Op if wanted(Kind::Hello) => {
                    op.fill(&mut map, kind.is_none(), "op", |m| {
                        m.next_value_seed(OperationSeed)
                    })?;
                }
                Field::Text if wanted(Kind::Answer) => {
                    text.fill(&mut map, kind.is_none(), "text", |m| m.next_value())?;
                }
                // A field of the other kind of message is ignored, as the derived reader
                // did.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match kind.ok_or_else(|| de::Error::missing_field("type"))? {
            Kind::Hello => Ok(ClientMsg::Hello {
                version: version
                    .take::<A::Error>()?
                    .ok_or_else(|| de::Error::missing_field("version"))?,
                op: op
                    .take::<A::Error>()?
                    .ok_or_else(|| de::Error::missing_field("op"))?,
            }),
            Kind::Answer => Ok(ClientMsg::Answer {
                text: text.take::<A::Error>()?.flatten(),
            }),
        }
    }
}

/// A field of the message: not seen, read, or seen before the message's `type` and kept as
/// it came (it is read once the kind says whether it belongs: a field of the other kind is
/// ignored, whatever it holds).
enum Slot<T> {
    Empty,
    Read(T),
    Early(serde_json::Value),
}

impl<T: de::DeserializeOwned> Slot<T> {
    fn fill<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
        early: bool,
        name: &'static str,
        read: impl FnOnce(&mut A) -> Result<T, A::Error>,
    ) -> Result<(), A::Error> {
        if !matches!(self, Slot::Empty) {
            return Err(de::Error::duplicate_field(name));
        }
        *self = if early {
            Slot::Early(map.next_value()?)
        } else {
            Slot::Read(read(map)?)
        };
        Ok(())
    }

    fn take<E: de::Error>(self) -> Result<Option<T>, E> {
        match self {
            Slot::Empty => Ok(None),
            Slot::Read(value) => Ok(Some(value)),
            Slot::Early(value) => T::deserialize(value).map(Some).map_err(E::custom),
        }
    }
}

/// Reads an [`Operation`], a login's without a buffer.
struct OperationSeed;

impl<'de> DeserializeSeed<'de> for OperationSeed {
    type Value = Operation;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Operation, D::Error> {
        deserializer.deserialize_map(OperationVisitor)
    }
}

/// A key or a string that is the one `wanted`, or another: borrowed from the input when
/// it has no escapes (the login's keys pass through as they are), owned otherwise.
enum Named<'de> {
    Wanted,
    Other(Cow<'de, str>),
}

/// Reads a [`Named`]: an object's key (`key`), or a string value.
struct Name {
    wanted: &'static str,
    key: bool,
}

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Named<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Named<'de>, D::Error> {
        if self.key {
            deserializer.deserialize_identifier(self)
        } else {
            deserializer.deserialize_str(self)
        }
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Named<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.key {
            "a field name"
        } else {
            "an operation's name"
        })
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Named<'de>, E> {
        Ok(if text == self.wanted {
            Named::Wanted
        } else {
            Named::Other(Cow::Borrowed(text))
        })
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Named<'de>, E> {
        Ok(if text == self.wanted {
            Named::Wanted
        } else {
            Named::Other(Cow::Owned(text.to_owned()))
        })
    }
}

/// The rest of a login's object, with a second `op` refused (the derived reader refused
/// it; the context's own reader would ignore it as an unknown field).
struct NoSecondTag<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for NoSecondTag<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let tag = Name {
            wanted: "op",
            key: true,
        };
        match self.0.next_key_seed(tag)? {
            None => Ok(None),
            Some(Named::Wanted) => Err(de::Error::duplicate_field("op")),
            Some(Named::Other(Cow::Borrowed(key))) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(key))
                .map(Some),
            Some(Named::Other(Cow::Owned(key))) => seed
                .deserialize(de::value::StringDeserializer::new(key))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

struct OperationVisitor;

impl<'de> Visitor<'de> for OperationVisitor {
    type Value = Operation;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an operation (an object with an `op`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operation, A::Error> {
        let mut object = serde_json::Map::new();
        let tag = Name {
            wanted: "op",
            key: true,
        };
        let login = Name {
            wanted: "authenticate",
            key: false,
        };
        match map.next_key_seed(tag)? {
            Some(Named::Wanted) => match map.next_value_seed(login)? {
                Named::Wanted => {
                    // The rest of the object is the login's context, read in place.
                    let context = AuthContext::deserialize(de::value::MapAccessDeserializer::new(
                        NoSecondTag(map),
                    ))?;
                    return Ok(Operation::Authenticate(context));
                }
                Named::Other(tag) => {
                    object.insert("op".into(), serde_json::Value::String(tag.into_owned()));
                }
            },
            Some(Named::Other(key)) => {
                object.insert(key.into_owned(), map.next_value()?);
            }
            None => {}
        }
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("a field given twice"));
            }
        }
        Operation::deserialize(serde_json::Value::Object(object)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        AdminOp, AuthContext, AuthMode, ClientMsg, ImportFile, ImportFormat, NewDevice, Operation,
        PROTOCOL_VERSION, frame,
    };
    use zeroize::Zeroizing;

    fn login() -> AuthContext {
        AuthContext {
            user: "alice".into(),
            service: "sshd".into(),
            rhost: Some("203.0.113.9".into()),
            tty: Some("ssh".into()),
            ssh_connection: Some("203.0.113.9 50000 192.0.2.1 22".into()),
            ssh_auth_info: Some("publickey ssh-ed25519 AAAA".into()),
            mode: AuthMode::Auto,
            can_prompt: false,
            command: Some("rsync --server -e.LsfxC . /tmp".into()),
        }
    }

    fn messages() -> Vec<ClientMsg> {
        let ops = [
            Operation::Authenticate(login()),
            Operation::Authenticate(AuthContext {
                user: "bob".into(),
                service: "su".into(),
                ..Default::default()
            }),
            Operation::EnrollTotp {
                name: Some("phone".into()),
            },
            Operation::BypassCodes,
            Operation::ListDevices,
            Operation::AddDevice(NewDevice::Hotp {
                name: None,
                secret: Zeroizing::new("GEZDGNBVGY3TQOJQ".into()),
                digits: 6,
            }),
            Operation::SetDefault { index: 2 },
            Operation::RemoveDevice { index: 1 },
            Operation::Admin(AdminOp::Unlock {
                user: "carol".into(),
            }),
            Operation::Admin(AdminOp::Import {
                format: ImportFormat::GoogleAuthenticator,
                dry_run: true,
                files: vec![ImportFile {
                    path: "/home/dave/.google_authenticator".into(),
                    user: Some("dave".into()),
                    text: Zeroizing::new("GEZDGNBVGY3TQOJQ\n\" TOTP_AUTH\n".into()),
                }],
            }),
        ];
        let mut all: Vec<ClientMsg> = ops
            .into_iter()
            .map(|op| ClientMsg::Hello {
                version: PROTOCOL_VERSION,
                op,
            })
            .collect();
        all.push(ClientMsg::Answer { text: None });
        all.push(ClientMsg::Answer {
            text: Some(Zeroizing::new("123456".into())),
        });
        all.push(ClientMsg::Answer {
            text: Some(Zeroizing::new("pass\"word\\with\u{1}escapes é".into())),
        });
        all
    }

    #[test]
    fn every_kind_of_message_reads_back_as_written() {
        for msg in messages() {
            let json = serde_json::to_vec(&msg).unwrap();
            let back: ClientMsg = frame::decode(&json).unwrap();
            assert_eq!(back, msg, "{}", String::from_utf8_lossy(&json));
            // Through a serde_json::Value too (another deserializer).
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(serde_json::from_value::<ClientMsg>(value).unwrap(), msg);
        }
    }

    #[test]
    fn fields_in_any_order_and_unknown_fields_read_as_before() {
        let login = login();
        let context = serde_json::to_value(&login).unwrap();
        let mut fields: Vec<(String, serde_json::Value)> = context
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.push(("op".into(), "authenticate".into()));
        fields.push(("future_field".into(), serde_json::json!({"x": [1, 2]})));
        // The tag last, in the middle, first.
        for at in [fields.len() - 2, 3, 0] {
            let mut f = fields.clone();
            let tag = f.remove(f.len() - 2);
            f.insert(at, tag);
            let op: String = f
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
                .collect::<Vec<_>>()
                .join(",");
            for msg in [
                format!(r#"{{"type":"hello","version":2,"op":{{{op}}},"extra":null}}"#),
                format!(r#"{{"op":{{{op}}},"version":2,"text":"x","type":"hello"}}"#),
            ] {
                let back: ClientMsg = frame::decode(msg.as_bytes()).unwrap();
                assert_eq!(
                    back,
                    ClientMsg::Hello {
                        version: 2,
                        op: Operation::Authenticate(login.clone())
                    },
                    "{msg}"
                );
            }
        }
        // Defaults as the derived reader gave them.
        let back: ClientMsg = frame::decode(
            br#"{"type":"hello","version":1,"op":{"op":"authenticate","user":"a","service":"s"}}"#,
        )
        .unwrap();
        let ClientMsg::Hello {
            op: Operation::Authenticate(ctx),
            ..
        } = back
        else {
            panic!("{back:?}");
        };
        assert_eq!(
            (ctx.mode, ctx.can_prompt, ctx.rhost),
            (AuthMode::Menu, true, None)
        );
        // An answer's fields of a hello are ignored; a missing text is none.
        let back: ClientMsg =
            frame::decode(br#"{"type":"answer","version":"x","op":7,"text":"1"}"#).unwrap();
        assert_eq!(
            back,
            ClientMsg::Answer {
                text: Some(Zeroizing::new("1".into()))
            }
        );
        let back: ClientMsg = frame::decode(br#"{"type":"answer"}"#).unwrap();
        assert_eq!(back, ClientMsg::Answer { text: None });
        // Before the type is known too, whatever they hold.
        let back: ClientMsg =
            frame::decode(br#"{"op":{"op":"no_such_thing"},"version":[],"type":"answer"}"#)
                .unwrap();
        assert_eq!(back, ClientMsg::Answer { text: None });
        let back: ClientMsg =
            frame::decode(br#"{"text":{},"type":"hello","version":2,"op":{"op":"list_devices"}}"#)
                .unwrap();
        assert_eq!(
            back,
            ClientMsg::Hello {
                version: 2,
                op: Operation::ListDevices
            }
        );
    }

    /// ClientMsg as serde's derived reader reads it (the fuzz target `frame` runs the same
    /// comparison on random input).
    #[derive(serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Derived {
        Hello { version: u32, op: Operation },
        Answer { text: Option<Zeroizing<String>> },
    }

    fn derived(json: &[u8]) -> Option<ClientMsg> {
        Some(match serde_json::from_slice::<Derived>(json).ok()? {
            Derived::Hello { version, op } => ClientMsg::Hello { version, op },
            Derived::Answer { text } => ClientMsg::Answer { text },
        })
    }

    const BAD: &[&[u8]] = &[
    br#"{"version":2,"op":{"op":"list_devices"}}"#,
    br#"{"type":"hello","op":{"op":"list_devices"}}"#,
    br#"{"type":"hello","version":2}"#,
    br#"{"type":"goodbye"}"#,
    br#"{"type":"answer","type":"answer"}"#,
    br#"{"type":"answer","text":"a","text":"b"}"#,
    br#"{"type":"hello","version":2,"op":{"op":"authenticate","service":"sshd"}}"#,
    br#"{"type":"hello","version":2,"op":{"op":"authenticate","user":"a","user":"b","service":"s"}}"#,
    br#"{"type":"hello","version":2,"op":{"user":"a","op":"authenticate","user":"b","service":"s"}}"#,
    br#"{"type":"hello","version":2,"op":{"op":"authenticate","user":"a","op":"list_devices","service":"s"}}"#,
    br#"{"type":"hello","version":2,"op":{"op":"authenticate","user":"a","\u006fp":"authenticate","service":"s"}}"#,
    br#"{"version":2,"type":"hello","version":2,"op":{"op":"list_devices"}}"#,
    br#"{"version":"two","type":"hello","op":{"op":"list_devices"}}"#,
    br#"{"type":"hello","version":2,"op":{"op":"no_such_thing"}}"#,
    br#"{"type":"hello","version":2,"op":{}}"#,
    br#"{"type":"hello","version":2,"op":"authenticate"}"#,
    br#"{"type":"hello","version":-1,"op":{"op":"list_devices"}}"#,
    br#"{"type":"answer","text":5}"#,
    br#"["hello"]"#,
    ];

    #[test]
    fn serdes_derived_reader_agrees_on_every_object_here() {
        let odd: &[&[u8]] = &[
            br#"{"type":"answer","version":"x","op":7,"text":"1"}"#,
            br#"{"op":{"op":"no_such_thing"},"version":[],"type":"answer"}"#,
            br#"{"text":{},"type":"hello","version":2,"op":{"op":"list_devices"}}"#,
            br#"{"type":"hello","version":2,"op":{"user":"a","service":"s","op":"authenticate"}}"#,
            br#"{"type":"hello","version":2,"op":{"op":"authenticate","user":"a","service":"s","x":{"op":1}}}"#,
            br#"{"type":"answer","text":null}"#,
        ];
        let written: Vec<Vec<u8>> = messages()
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap())
            .collect();
        let inputs = odd
            .iter()
            .copied()
            .chain(BAD.iter().copied().filter(|b| b.starts_with(b"{")))
            .chain(written.iter().map(Vec::as_slice));
        // The one difference: an array, tag first, which no client writes.
        let array = br#"["answer","123456"]"#;
        assert!(derived(array).is_some());
        assert!(frame::decode::<ClientMsg>(array).is_err());
        for json in inputs {
            assert_eq!(
                frame::decode::<ClientMsg>(json).ok(),
                derived(json),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused_as_the_wrong_shape() {
        for bad in BAD {
            let err = frame::decode::<ClientMsg>(bad).unwrap_err();
            assert!(
                err.to_string().contains("JSON of the wrong shape"),
                "{}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
