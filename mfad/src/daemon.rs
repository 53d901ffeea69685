//! The daemon: one conversation per connection, dispatched by operation. The conversations
//! themselves live in `login` (a login's second factor), `devices` (a user's own settings)
//! and `admin` (root's operations). All policy lives in mfad; clients only relay.

use crate::accounts::{Accounts, AccountsError, CachedAccounts, NssAccounts};
use crate::admin::AdminService;
use crate::clock::Clock;
use crate::config::Config;
use crate::conn::{Conn, ConnError};
use crate::core::Core;
use crate::devices::AccountService;
use crate::enrol_web::EnrolmentDesk;
use crate::login::LoginService;
use crate::oob::approvals::{ApprovalDecision, ApprovalRequest, ApprovalStore};
use crate::oob::limits::OobLimits;
use crate::oob::notify::{Notifier, ProviderError, http_client};
use crate::oob::twilio::Twilio;
use crate::providers::local::LocalFactors;
use crate::random::{OsRandom, Random};
use crate::store::StoreError;
use crate::store::pool::StorePool;
use crate::text::{self, clean};
use crate::web::{ApprovalHooks, WebService};
use mfa_proto::{ClientMsg, MIN_PROTOCOL_VERSION, Operation, PROTOCOL_VERSION};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Blocking(#[from] crate::blocking::Failed),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
}

pub(crate) type Result<T> = std::result::Result<T, SessionError>;

/// What the daemon takes from the world around it, each through one wrapper: the time,
/// who users are, and randomness.
pub struct World {
    pub clock: Arc<dyn Clock>,
    pub accounts: Arc<dyn Accounts>,
    pub random: Arc<dyn Random>,
    /// Checks passwords for the enrolment page (PAM service `mfa-web` in production).
    pub passwords: Arc<dyn crate::password::PasswordCheck>,
}

/// What a reload keeps: pending approvals, the login history's queue, the directory's places.
type KeptAcrossReloads = (
    Arc<ApprovalStore>,
    Arc<crate::history::History>,
    Arc<crate::core::DirectoryPlaces>,
);

/// The daemon: the services a conversation is dispatched to, each holding only what it
/// needs. The socket server (`server.rs`) accepts connections and calls [`Daemon::serve`].
pub struct Daemon {
    core: Arc<Core>,
    /// A login's second factor (`login.rs`, the providers below it).
    login: LoginService,
    /// A user's own devices (`devices.rs`).
    account: AccountService,
    /// Root's operations (`admin.rs`).
    admin: AdminService,
    /// The web front's requests (`web.rs`).
    web: WebService,
    /// The uid of `[web] user` when the daemon was built, for the socket's connection
    /// limits (the role itself is checked on each request).
    web_uid: Option<u32>,
    /// Pushes and calls waiting for the phone's answer; answered through the web service.
    approvals: Arc<ApprovalStore>,
    /// Checks passwords for the enrolment page.
    passwords: Arc<dyn crate::password::PasswordCheck>,
}

/// What the web service tells the daemon: a report locks the account at once.
struct ReportHook {
    store: Arc<StorePool>,
    clock: Arc<dyn Clock>,
    lock_for: i64,
}

impl ApprovalHooks for ReportHook {
    fn reported(&self, request: &ApprovalRequest) {
        let until = self.clock.now().saturating_add(self.lock_for);
        error!(
            target: "mfad::decision",
            "ALERT user={} rhost={} method={} outcome=reported reason=\"the user did not start \
             this login\"; account locked until {}",
            clean(&request.user),
            clean(&request.rhost),
            request.method.as_str(),
            text::utc(until)
        );
        let store = Arc::clone(&self.store);
        let user = request.user.clone();
        // The endpoint's task must not block on the database; the lock is written beside it.
        tokio::spawn(async move {
            let locked = match store.get().await {
                Ok(mut s) => {
                    let user = user.clone();
                    tokio::task::spawn_blocking(move || s.lock_until(&user, until))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Err(e) => {
                    store.failed(&e);
                    Err(e.to_string())
                }
            };
            if let Err(e) = locked {
                error!("cannot lock {} after a report: {e}", clean(&user));
            }
        });
    }

    fn decided(&self, request: &ApprovalRequest, decision: ApprovalDecision) {
        info!(
            "web front: user={} method={} answer={}",
            clean(&request.user),
            request.method.as_str(),
            decision.as_str()
        );
    }
}

fn accounts_uid(core: &Core, name: &str) -> Option<u32> {
    match core.accounts.by_name(name) {
        Ok(account) => account.map(|a| a.uid),
        Err(e) => {
            warn!("cannot look up the web user {}: {e}", clean(name));
            None
        }
    }
}

fn report_hook(core: &Core) -> Arc<dyn ApprovalHooks> {
    Arc::new(ReportHook {
        store: Arc::clone(&core.store),
        clock: Arc::clone(&core.clock),
        lock_for: core.report_lock_secs(),
    })
}

/// The fields every decision is logged with.
#[derive(Clone, Copy)]
pub(crate) struct Who<'a> {
    pub user: &'a str,
    pub rhost: &'a str,
    pub service: &'a str,
    /// The client can show prompts (false: the ForceCommand helper without a terminal).
    pub can_prompt: bool,
    /// Who vouches for `rhost`: `root` (sshd's PAM stack: the connection's address),
    /// `user` (the user's own process, e.g. the ForceCommand helper: what it claimed), `-`
    /// for the local commands. fail2ban acts only on `root`'s: a local user must not get
    /// an address of their choosing banned.
    pub vouched: &'static str,
}

/// [`Who::vouched`] for a conversation with caller `uid`.
pub(crate) fn vouched_by(uid: u32) -> &'static str {
    if uid == 0 { "root" } else { "user" }
}

impl<'a> Who<'a> {
    pub(crate) fn new(
        user: &'a str,
        rhost: &'a str,
        ctx: &'a mfa_proto::AuthContext,
        uid: u32,
    ) -> Self {
        Who {
            user,
            rhost,
            service: &ctx.service,
            can_prompt: ctx.can_prompt,
            vouched: vouched_by(uid),
        }
    }
}

/// Logs one decision in the stable line format of docs/LOGS.md ([`crate::logging::decision`]).
pub(crate) fn decision(who: &Who<'_>, method: &'static str, outcome: &'static str, reason: &str) {
    crate::metrics::count_decision(method, outcome);
    crate::history::note(method, outcome, reason);
    crate::logging::decision(
        who.user,
        who.rhost,
        who.service,
        method,
        outcome,
        reason,
        who.vouched,
    );
}

impl Daemon {
    /// Builds the daemon and its providers from `config`. Fails only when the HTTPS client
    /// for the providers cannot be built (its TLS roots cannot be loaded).
    pub fn new(
        config: Config,
        store: StorePool,
        clock: Arc<dyn Clock>,
    ) -> std::result::Result<Self, ProviderError> {
        let accounts =
            CachedAccounts::new(Arc::new(NssAccounts), Arc::clone(&clock), config.user_cache);
        let world = World {
            clock,
            accounts: Arc::new(accounts),
            random: Arc::new(OsRandom),
            passwords: Arc::new(crate::password::PamPasswords {
                service: config.web.pam_service.clone(),
            }),
        };
        Daemon::in_world(config, store, world)
    }

    /// As [`Daemon::new`], in `world` (tests: a fake clock, a table of users, a seeded
    /// generator).
    pub fn in_world(
        config: Config,
        store: StorePool,
        world: World,
    ) -> std::result::Result<Self, ProviderError> {
        let verified = config.approval.as_ref().is_some_and(|a| a.verified_push);
        let approvals = Arc::new(ApprovalStore::with_random(
            Arc::clone(&world.clock),
            Arc::clone(&world.random),
            verified,
        ));
        let limits = Arc::new(OobLimits::new(
            config.limits.clone(),
            Arc::clone(&world.clock),
        ));
        let store = Arc::new(store);
        let history = Arc::new(crate::history::History::new(
            Arc::clone(&store),
            Arc::clone(&world.clock),
            config.login_history,
        ));
        let directory = Arc::new(crate::core::DirectoryPlaces::new());
        Self::build(
            config,
            store,
            world,
            (approvals, history, directory),
            limits,
        )
    }

    /// The daemon for a reloaded `config` (SIGHUP): new providers and settings, the same
    /// store, clock, accounts, pending approvals (mfa-web's answers reach them) and,
    /// unless `[limits]` changed, the same rate-limit counts. Conversations in progress
    /// keep the daemon they started with.
    pub fn reloaded(&self, config: Config) -> std::result::Result<Self, ProviderError> {
        let core = &self.core;
        let limits = if format!("{:?}", config.limits) == format!("{:?}", core.config.limits) {
            Arc::clone(&self.login.local.limits)
        } else {
            Arc::new(OobLimits::new(
                config.limits.clone(),
                Arc::clone(&core.clock),
            ))
        };
        let world = World {
            clock: Arc::clone(&core.clock),
            accounts: Arc::clone(&core.accounts),
            random: Arc::clone(&core.random),
            passwords: Arc::clone(&self.passwords),
        };
        core.history.keep_days(config.login_history);
        Self::build(
            config,
            Arc::clone(&core.store),
            world,
            (
                Arc::clone(&self.approvals),
                Arc::clone(&core.history),
                Arc::clone(&core.directory),
            ),
            limits,
        )
    }

    fn build(
        config: Config,
        store: Arc<StorePool>,
        world: World,
        (approvals, history, directory): KeptAcrossReloads,
        limits: Arc<OobLimits>,
    ) -> std::result::Result<Self, ProviderError> {
        let World {
            clock,
            accounts,
            random,
            passwords,
        } = world;
        let issuer = config.issuer();
        let (notifier, twilio) = if config.push.is_some() || config.twilio.is_some() {
            let client = http_client()?;
            (
                config
                    .push
                    .as_ref()
                    .map(|p| Notifier::new(p, client.clone())),
                config.twilio.as_ref().map(|t| Twilio::new(t, client)),
            )
        } else {
            (None, None)
        };
        let duo = match &config.duo {
            Some(cfg) => {
                for note in &cfg.notes {
                    warn!("{note}");
                }
                let duo = crate::duo::Duo::new(cfg, Arc::clone(&clock)).map_err(|e| {
                    error!("{e}");
                    ProviderError::Client
                })?;
                Some(Arc::new(duo))
            }
            None => None,
        };
        let core = Arc::new(Core {
            config,
            issuer,
            store,
            clock,
            accounts,
            random,
            history,
            directory,
        });
        let local = Arc::new(LocalFactors {
            core: Arc::clone(&core),
            approvals: Arc::clone(&approvals),
            notifier,
            twilio,
            limits,
        });
        Ok(Daemon {
            login: LoginService {
                core: Arc::clone(&core),
                local: Arc::clone(&local),
                duo,
            },
            account: AccountService {
                core: Arc::clone(&core),
                local: Arc::clone(&local),
            },
            admin: AdminService {
                core: Arc::clone(&core),
            },
            web_uid: accounts_uid(&core, &core.config.web.user),
            web: WebService::new(
                &core.config,
                Arc::clone(&approvals),
                report_hook(&core),
                Arc::clone(&core.accounts),
            )
            .with_enrolment(EnrolmentDesk {
                core: Arc::clone(&core),
                passwords: Arc::clone(&passwords),
            })
            .with_portal(crate::portal::PortalDesk {
                core: Arc::clone(&core),
                local,
                passwords: Arc::clone(&passwords),
            }),
            core,
            approvals,
            passwords,
        })
    }

    /// The uid of the web front's user (`[web] user`), if it existed when this daemon was
    /// built (at start and on each reload).
    pub fn web_uid(&self) -> Option<u32> {
        self.web_uid
    }

    /// The configuration this daemon runs with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// In a cluster (a PostgreSQL store): shares the pending approvals with the other
    /// nodes, so any node's endpoint answers any node's login. Call once, on the runtime.
    pub fn share_approvals(&self) {
        if let crate::config::StoreLocation::Postgres(url) = &self.core.config.location {
            crate::store::pg_approvals::PgRelay::share(
                crate::store::open::pg_options(&self.core.config, url),
                &self.approvals,
            );
        }
    }

    /// What every service shares (the metrics read the store through it).
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The pending approvals (the web service answers them; tests create them).
    pub fn approvals(&self) -> Arc<ApprovalStore> {
        Arc::clone(&self.approvals)
    }

    /// What the web service calls when a phone answers.
    pub fn approval_hooks(&self) -> Arc<dyn ApprovalHooks> {
        report_hook(&self.core)
    }

    /// Stores the login history rows still queued (a clean stop).
    pub async fn flush_history(&self) {
        self.core.history.flush().await;
    }

    pub fn answer_timeout(&self) -> Duration {
        Duration::from_secs(self.core.config.answer_timeout)
    }

    /// Serves one connection from hello to done. Once anything has been said to the client,
    /// the conversation ends with a verdict: a timeout, a bad frame or a store error after
    /// that point is an explicit refusal, never a silent close (which a client may only read
    /// as "mfad unavailable" before mfad has spoken).
    pub async fn serve(&self, mut conn: Conn) {
        let uid = match conn.peer_uid() {
            Ok(uid) => uid,
            Err(e) => {
                warn!("cannot read the peer credentials of a connection: {e}");
                return;
            }
        };
        let (op, keepalive) = match conn.read_hello().await {
            Ok(ClientMsg::Hello { version, op })
                if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) =>
            {
                (op, if version >= 2 { conn.keepalive() } else { None })
            }
            Ok(ClientMsg::Hello { version, .. }) => {
                warn!("uid {uid} speaks protocol version {version}; refused");
                let _ = conn
                    .unavailable(format!(
                        "protocol version {version} is not supported (mfad speaks {PROTOCOL_VERSION})"
                    ))
                    .await;
                return;
            }
            Ok(ClientMsg::Answer { .. }) => {
                warn!("uid {uid} sent an answer before hello; connection closed");
                return;
            }
            Err(e) => {
                warn!("uid {uid}: {e}; connection closed");
                return;
            }
        };
        let converse = self.converse(&mut conn, op);
        match keepalive {
            // Beside the conversation, in its task: they end with it, on its thread.
            Some(alive) => {
                tokio::select! {
                    biased;
                    () = converse => {}
                    () = alive => {}
                }
            }
            None => converse.await,
        }
    }

    /// Runs the conversation `op` asks for, over `conn`, to its end (a verdict, or a
    /// refusal once anything was said). The socket server calls it after the hello; tests
    /// call it with a scripted dialogue, in-process.
    pub async fn converse(&self, conn: &mut Conn, op: Operation) {
        let Operation::Authenticate(ctx) = &op else {
            return Box::pin(self.converse_op(conn, op)).await;
        };
        // A login leaves one row in the history, once it is over (the account's name is
        // known only once the directory was asked; an unknown name leaves none).
        let (service, rhost) = (ctx.service.clone(), ctx.rhost.clone());
        // Boxed, so that the scope around it does not hold it twice (an async block keeps
        // what it was given beside what it awaits).
        let ((), trace) = crate::history::traced(Box::pin(self.converse_op(conn, op))).await;
        if let Some(user) = &trace.user {
            self.core.history.record(
                &trace,
                conn.verdict(),
                user,
                &service,
                rhost.as_deref().unwrap_or("-"),
            );
        }
    }

    async fn converse_op(&self, conn: &mut Conn, op: Operation) {
        let uid = match conn.peer_uid() {
            Ok(uid) => uid,
            Err(e) => {
                warn!("cannot read the peer credentials of a connection: {e}");
                return;
            }
        };
        let what = op.safe_string();
        // Who a refusal after a break is logged for, when the conversation is a login.
        let login = match &op {
            Operation::Authenticate(ctx) => Some((
                ctx.user.clone(),
                ctx.rhost.clone().unwrap_or_else(|| "-".into()),
                ctx.service.clone(),
                ctx.can_prompt,
            )),
            _ => None,
        };
        // Each operation's future is boxed: awaited in place, the largest of them (and of
        // everything they await) would set the size of every connection's task, a pending
        // push included (tests/conversation_size.rs).
        let result = match op {
            Operation::Authenticate(ctx) => Box::pin(self.login.authenticate(conn, uid, ctx)).await,
            Operation::EnrollTotp { name } => {
                Box::pin(self.account.enroll_totp(conn, uid, name)).await
            }
            Operation::BypassCodes => Box::pin(self.account.own_bypass_codes(conn, uid)).await,
            Operation::ListDevices => Box::pin(self.account.list_devices(conn, uid)).await,
            Operation::AddDevice(new) => Box::pin(self.account.add_device(conn, uid, new)).await,
            Operation::SetDefault { index } => {
                Box::pin(self.account.set_default(conn, uid, index)).await
            }
            Operation::RemoveDevice { index } => {
                Box::pin(self.account.remove_device(conn, uid, index)).await
            }
            Operation::Admin(op) => Box::pin(self.admin.admin(conn, uid, op)).await,
            Operation::Web(request) => Box::pin(self.web.serve(conn, uid, request)).await,
        };
        let refused = |reason: &str| {
            if let Some((user, rhost, service, can_prompt)) = &login {
                let who = Who {
                    user,
                    rhost,
                    service,
                    can_prompt: *can_prompt,
                    vouched: vouched_by(uid),
                };
                decision(&who, "-", "deny", reason);
            }
        };
        match result {
            Ok(()) => {}
            Err(SessionError::Conn(e)) => {
                warn!("uid {uid} {}: {e}", clean(&what));
                if conn.has_spoken() {
                    refused(&match &e {
                        ConnError::TimedOut(limit) => {
                            format!("no answer within {} s", limit.as_secs())
                        }
                        _ => "the client broke the conversation".to_string(),
                    });
                    conn.refuse_after_break(&e).await;
                }
            }
            Err(e) => {
                if matches!(&e, SessionError::Store(s) if s.is_outage()) {
                    // Logged once per outage by the pool; each login only says it failed.
                    debug!("uid {uid} {}: {e}", clean(&what));
                } else {
                    error!("uid {uid} {}: {e}", clean(&what));
                }
                if conn.has_spoken() {
                    refused("mfad could not read or write its database");
                }
                // After anything was said, this is a refusal (see Conn::unavailable).
                let _ = conn
                    .unavailable("mfad could not read or write its database")
                    .await;
            }
        }
    }
}
