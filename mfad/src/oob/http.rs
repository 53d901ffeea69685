//! Escaping for the markup mfad writes (TwiML for the voice provider). The approval pages
//! and the provider's callbacks are served by mfa-web, which relays them to mfad's web
//! service (`crate::web`).

pub use mfa_proto::text::markup_escape as escape;
