//! `pam_sm_authenticate`: gather the login's context, let mfad drive the conversation,
//! and turn its outcome, or its absence, into a PAM result.
//!
//! mfad decides everything it can; this side only decides what an unreachable mfad
//! means, by the `failmode` argument. Once mfad has spoken (sent its first message), a
//! conversation that breaks off is a refusal whatever the fail mode: otherwise a user could
//! wait at the prompt until mfad gives up, and be let in by `failmode=safe`.

use crate::args::{FailMode, ModuleArgs};
use crate::env::{LogLevel, PamEnv, PamItem};
use mfa_proto::client::{INTERRUPTED_TEXT, UNAVAILABLE_SAFE_TEXT, UNAVAILABLE_SECURE_TEXT};
use mfa_proto::text::escape_controls;
use mfa_proto::{AuthContext, Client, ClientError, Conversation, Operation, Outcome};
use pam::constants::PamResultCode;
use zeroize::Zeroizing;

/// The whole of `pam_sm_authenticate`, given the module arguments as strings.
pub fn authenticate<E: PamEnv>(env: &mut E, args: &[String]) -> PamResultCode {
    let (args, problems) = ModuleArgs::parse(args);
    for problem in &problems {
        env.syslog(LogLevel::Err, &escape_controls(problem));
    }

    let user = match env.user() {
        Ok(user) => user,
        Err(code) => {
            env.syslog(
                LogLevel::Err,
                &format!("cannot get the user name: {code:?}"),
            );
            return code;
        }
    };
    if let Err(e) = mfa_proto::check_user_name(&user) {
        // Refused before mfad hears of it: such a name cannot be an account.
        env.syslog(
            LogLevel::Err,
            &format!("refusing user name \"{}\": {e}", escape_controls(&user)),
        );
        return PamResultCode::PAM_AUTH_ERR;
    }

    let ctx = AuthContext {
        user,
        service: env.item(PamItem::Service).unwrap_or_default(),
        rhost: env.item(PamItem::RHost).filter(|s| !s.is_empty()),
        tty: env.item(PamItem::Tty).filter(|s| !s.is_empty()),
        ssh_connection: env.getenv("SSH_CONNECTION").filter(|s| !s.is_empty()),
        ssh_auth_info: env.getenv("SSH_AUTH_INFO_0").filter(|s| !s.is_empty()),
        mode: args.mode,
        can_prompt: true,
        command: None,
    };
    let op = Operation::Authenticate(ctx.clone());
    if args.debug {
        env.syslog(
            LogLevel::Debug,
            &escape_controls(&format!(
                "asking mfad at {}: {}",
                args.socket.display(),
                op.safe_string()
            )),
        );
    }

    // Bounded by the client's timeouts. A write to a socket mfad has closed fails with
    // EPIPE without raising SIGPIPE in the host (std's UnixStream sends with MSG_NOSIGNAL;
    // a pamtester test checks that the application survives it).
    let result =
        Client::connect(&args.socket, args.connect_timeout, args.timeout).and_then(|mut client| {
            let mut relay = Relay {
                env: &mut *env,
                debug: args.debug,
            };
            mfa_proto::run_conversation(&mut client, op, &mut relay)
        });

    match result {
        Ok(outcome) => {
            if args.debug {
                env.syslog(
                    LogLevel::Debug,
                    &escape_controls(&format!("mfad answered {outcome:?} for {}", ctx.user)),
                );
            }
            match outcome {
                Outcome::Allow => PamResultCode::PAM_SUCCESS,
                Outcome::Deny => PamResultCode::PAM_AUTH_ERR,
                Outcome::Ignore => PamResultCode::PAM_IGNORE,
            }
        }
        Err(e) if e.mfad_had_spoken() => {
            env.syslog(
                LogLevel::Err,
                &escape_controls(&format!(
                    "{e}; refusing {} from {} (the fail mode applies only before mfad speaks)",
                    ctx.user,
                    ctx.rhost.as_deref().unwrap_or("an unknown host")
                )),
            );
            let _ = env.error(INTERRUPTED_TEXT);
            PamResultCode::PAM_AUTH_ERR
        }
        Err(e) => fail_mode(env, args.failmode, &ctx, &e),
    }
}

/// mfad gave no answer: `secure` refuses, `safe` lets the user in and says so loudly.
fn fail_mode<E: PamEnv>(
    env: &mut E,
    failmode: FailMode,
    ctx: &AuthContext,
    error: &ClientError,
) -> PamResultCode {
    let who = format!(
        "{} from {}",
        ctx.user,
        ctx.rhost.as_deref().unwrap_or("an unknown host")
    );
    if let ClientError::NotRoot { .. } = error {
        // Someone else's process holds mfad's socket path: worth an alert in either mode.
        env.syslog(
            LogLevel::Alert,
            &escape_controls(&format!("impostor on mfad's socket: {error}")),
        );
    }
    match failmode {
        FailMode::Secure => {
            env.syslog(
                LogLevel::Err,
                &escape_controls(&format!(
                    "mfad unreachable ({error}); failmode=secure: refusing {who}"
                )),
            );
            let _ = env.error(UNAVAILABLE_SECURE_TEXT);
            PamResultCode::PAM_AUTH_ERR
        }
        FailMode::Safe => {
            env.syslog(
                LogLevel::Alert,
                &escape_controls(&format!(
                    "mfad unreachable ({error}); failmode=safe: allowing {who} without a second factor"
                )),
            );
            let _ = env.info(UNAVAILABLE_SAFE_TEXT);
            PamResultCode::PAM_SUCCESS
        }
    }
}

/// Shows mfad's messages through the PAM conversation. A failed conversation becomes
/// a `None` answer, which mfad treats as "could not ask".
struct Relay<'a, E: PamEnv> {
    env: &'a mut E,
    debug: bool,
}

impl<E: PamEnv> Relay<'_, E> {
    fn conv_failed(&mut self, what: &str, code: PamResultCode) {
        if self.debug {
            self.env.syslog(
                LogLevel::Debug,
                &format!("the application could not show {what}: {code:?}"),
            );
        }
    }
}

impl<E: PamEnv> Conversation for Relay<'_, E> {
    fn info(&mut self, text: &str) {
        if let Err(code) = self.env.info(text) {
            self.conv_failed("an info message", code);
        }
    }

    fn error(&mut self, text: &str) {
        if let Err(code) = self.env.error(text) {
            self.conv_failed("an error message", code);
        }
    }

    fn prompt(&mut self, text: &str, echo: bool) -> Option<Zeroizing<String>> {
        match self.env.prompt(text, echo) {
            Ok(answer) => answer,
            Err(code) => {
                self.conv_failed("a prompt", code);
                None
            }
        }
    }
}
