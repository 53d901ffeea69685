//! Out-of-band second factors: push notifications, SMS and phone calls.
//!
//! This is plumbing only: the approval store, the notifiers and the Twilio-compatible client.
//! The daemon decides when to use them and what the user sees; the pages a phone opens are
//! mfa-web's, relayed to the daemon's web service (`crate::web`).

pub mod approvals;
pub mod config;
pub mod http;
pub mod limits;
pub mod notify;
pub mod phone;
pub mod twilio;

pub use crate::web::ApprovalHooks;
pub use approvals::{
    Answered, ApprovalDecision, ApprovalMethod, ApprovalRequest, ApprovalStore, CreateError,
    DecideError, Pending, PendingView,
};
pub use config::{ApprovalConfig, NotifierKind, OobConfigError, PushConfig, Secret, TwilioConfig};
pub use notify::{
    HttpClient, MAX_IN_FLIGHT, Notifier, ProviderError, PushMessage, http_client, is_ntfy_topic,
};
pub use phone::{PhoneError, check_phone, mask_phone};
pub use twilio::Twilio;
