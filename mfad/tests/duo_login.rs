//! Logins through mfad's Duo provider, over mfad's real socket, against the fake Duo API:
//! what the user sees, what Duo is sent, and how outages reach the client's fail mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fake_duo::{FakeDuo, Options, Scenario};
use mfa_proto::{AuthContext, AuthMode, ClientError, Outcome};
use mfa_test_support::{TestDaemon, ssh};
use mfad::Config;
use mfad::duo::config::DuoConfig;
use mfad::oob::config::Secret;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fake on a runtime of its own, so the blocking test body can talk to mfad.
struct Duo {
    fake: FakeDuo,
    _rt: tokio::runtime::Runtime,
    ca_dir: tempfile::TempDir,
}

impl Duo {
    fn start(tune: impl FnOnce(&mut Options)) -> Duo {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut opts = Options {
            push_delay: Duration::from_millis(200),
            ..Options::default()
        };
        tune(&mut opts);
        let fake = rt.block_on(FakeDuo::start(opts)).unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        std::fs::write(ca_dir.path().join("duo-ca.pem"), fake.ca_pem()).unwrap();
        Duo {
            fake,
            _rt: rt,
            ca_dir,
        }
    }

    /// The fake's CA certificate, for `[duo] cafile`.
    fn cafile(&self) -> std::path::PathBuf {
        self.ca_dir.path().join("duo-ca.pem")
    }

    /// Everyone (root, daemon, bin...) gets `s`.
    fn with(s: Scenario) -> Duo {
        Duo::start(|o| o.default_scenario = s)
    }
}

/// mfad with `[duo]` pointed at `duo`'s fake, then `tune`d.
fn duo_daemon(duo: &Duo, tune: impl FnOnce(&mut Config)) -> TestDaemon {
    duo_daemon_with(duo, tune, None)
}

/// The same, with `accounts` in place of the system's user database.
fn duo_daemon_with(
    duo: &Duo,
    tune: impl FnOnce(&mut Config),
    accounts: Option<Arc<dyn mfad::accounts::Accounts>>,
) -> TestDaemon {
    TestDaemon::start_with(
        |c| {
            c.duo = Some(DuoConfig {
                host: Some(duo.fake.host()),
                ikey: Some(duo.fake.ikey().into()),
                skey: Some(Secret::new(duo.fake.skey())),
                cafile: Some(duo.cafile()),
                https_timeout: Some(2),
                status_timeout: Some(10),
                ..Default::default()
            });
            tune(c);
        },
        accounts,
    )
}

/// The ForceCommand helper without a terminal (scp, sftp, rsync).
fn headless(user: &str, command: &str) -> AuthContext {
    AuthContext {
        user: user.into(),
        service: "mfa-login-prompt".into(),
        rhost: Some("192.0.2.7".into()),
        ssh_connection: Some("192.0.2.7 50022 192.0.2.1 22".into()),
        mode: AuthMode::Auto,
        can_prompt: false,
        command: Some(command.into()),
        ..Default::default()
    }
}

const MENU: &str = "Duo two-factor login for root\n\nEnter a passcode or select one of the \
                    following options:\n\n 1. Duo Push to XXX-XXX-1234\n 2. Phone call to \
                    XXX-XXX-1234\n 3. SMS passcodes to XXX-XXX-1234\n\nPasscode or option (1-3): ";

#[test]
fn the_menu_is_duos_own_and_an_approved_push_logs_in() {
    let duo = Duo::with(Scenario::Push);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &["1", ""]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let prompts = script.prompts();
    assert_eq!(prompts[0], MENU);
    // OpenSSH before 10.3 shows PAM text only with a prompt: the waiting line is one.
    assert_eq!(
        prompts[1],
        "Pushed a login request to your device...\nPress Enter once you have answered it: "
    );
    assert!(
        script.shown.last().unwrap() == "info: Success. Logging you in...",
        "{}",
        script.text()
    );
    let preauth = &duo.fake.requests_to("/auth/v2/preauth")[0];
    assert_eq!(preauth.params["username"], "root");
    assert_eq!(preauth.params["ipaddr"], "192.0.2.7");
    assert_eq!(preauth.params["text_prompt"], "1");
    // As Duo's own client: the option's name for Duo to resolve.
    let auth = &duo.fake.requests_to("/auth/v2/auth")[0];
    assert_eq!(auth.params["factor"], "prompt");
    assert_eq!(auth.params["prompt"], "push1");
    assert_eq!(auth.params["async"], "1");
    assert!(
        !duo.fake.requests_to("/auth/v2/auth_status").is_empty(),
        "the push was followed through /auth_status"
    );
    let all = duo.fake.requests();
    assert!(all.iter().all(|r| r.rejected.is_none()), "{all:?}");
}

#[test]
fn without_wait_prompt_phone_progress_is_shown_as_duo_reports_it() {
    let duo = Duo::with(Scenario::Phone);
    let d = duo_daemon(&duo, |c| c.wait_prompt = false);
    let (outcome, script) = d.login("root", &["2"]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let after_menu: Vec<&String> = script.shown.iter().skip(1).collect();
    assert_eq!(
        after_menu,
        [
            "info: Dialing XXX-XXX-1234...",
            "info: Answered. Press any key on your phone to log in.",
            "info: Success. Logging you in...",
        ],
        "{}",
        script.text()
    );
    let auth = &duo.fake.requests_to("/auth/v2/auth")[0];
    assert_eq!(auth.params["factor"], "prompt");
    assert_eq!(auth.params["prompt"], "phone1");
}

#[test]
fn a_denied_push_goes_back_to_the_menu_where_a_passcode_works() {
    let duo = Duo::with(Scenario::PushDeny);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &["1", "", fake_duo::PASSCODE]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(script.text().contains("error: Login request denied."));
    assert_eq!(script.prompts()[2], MENU);
    let auths = duo.fake.requests_to("/auth/v2/auth");
    assert_eq!(auths[1].params["factor"], "prompt");
    assert_eq!(auths[1].params["prompt"], "(hidden)");
}

#[test]
fn a_timed_out_push_is_refused_when_no_round_is_left() {
    let duo = Duo::with(Scenario::PushTimeout);
    let d = duo_daemon(&duo, |c| {
        c.duo.as_mut().unwrap().prompts = Some(1);
    });
    let (outcome, script) = d.login("root", &["", ""]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.text().contains("error: Login timed out."));
    assert!(script.text().contains("Too many attempts"));
}

#[test]
fn sms_passcodes_are_sent_then_one_logs_in() {
    let duo = Duo::with(Scenario::Sms);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &["3", fake_duo::SMS_PASSCODE]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(script.text().contains("info: New SMS passcodes sent."));
    let auths = duo.fake.requests_to("/auth/v2/auth");
    assert_eq!(auths[0].params["prompt"], "sms1");
    assert_eq!(auths[1].params["prompt"], "(hidden)");
}

#[test]
fn wrong_passcodes_are_refused_after_the_prompts() {
    let duo = Duo::with(Scenario::Passcode);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &["111111", "222222", "333333"]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert_eq!(
        script
            .shown
            .iter()
            .filter(|s| s.contains("Incorrect passcode. Please try again."))
            .count(),
        3,
        "{}",
        script.text()
    );
    assert_eq!(
        script.prompts()[0],
        "Duo two-factor login for root\n\nEnter a passcode: "
    );
}

#[test]
fn allow_deny_and_enroll_come_from_preauth() {
    let duo = Duo::start(|o| {
        o.users.insert("root".into(), Scenario::Allow);
        o.users.insert("daemon".into(), Scenario::Deny);
        o.users.insert("bin".into(), Scenario::Enroll);
    });
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script
            .text()
            .contains("allows this login without two-factor")
    );

    let (outcome, script) = d.login("daemon", &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(
        script
            .text()
            .contains("error: Login denied by your administrator.")
    );

    let (outcome, script) = d.login("bin", &[]);
    assert_eq!(outcome, Outcome::Deny);
    let text = script.text();
    assert!(
        text.contains(&format!("Please enroll at {}", fake_duo::ENROLL_URL)),
        "{text}"
    );
    assert!(
        text.contains('█') || text.contains('▀') || text.contains('▄'),
        "a QR code of the portal: {text}"
    );
}

#[test]
fn a_locked_out_account_ends_the_login_at_once() {
    let duo = Duo::with(Scenario::Locked);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &[fake_duo::PASSCODE]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script
            .text()
            .contains("locked out due to excessive authentication failures")
    );
    assert_eq!(script.prompts().len(), 1);
}

#[test]
fn escape_sequences_from_duo_never_reach_the_user() {
    let duo = Duo::with(Scenario::Escapes);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &["1", ""]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let text = script.text();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("Duo two-factor login for root"), "{text}");
    assert!(
        text.contains("Pushed a login request to your device..."),
        "{text}"
    );
    assert!(text.contains("Success. Logging you in..."), "{text}");
}

#[test]
fn without_a_terminal_the_default_factor_runs_with_push_information() {
    let duo = Duo::with(Scenario::Push);
    let d = duo_daemon(&duo, |c| {
        c.duo.as_mut().unwrap().pushinfo = Some(true);
    });
    let (outcome, script) = d.run(headless("root", "scp -t /data"), &[]);
    assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
    assert!(script.prompts().is_empty(), "{}", script.text());
    assert_eq!(
        script.shown,
        [
            "info: Autopushing login request to phone...",
            "info: Pushed a login request to your device...",
            "info: Success. Logging you in...",
        ]
    );
    let auth = &duo.fake.requests_to("/auth/v2/auth")[0];
    assert_eq!(auth.params["factor"], "prompt");
    assert_eq!(auth.params["prompt"], "push1");
    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        auth.params["pushinfo"],
        format!("Server={hostname}&From=192.0.2.7&Command=scp%20-t%20%2Fdata")
    );
}

#[test]
fn without_a_terminal_an_sms_default_is_refused_at_once() {
    let duo = Duo::with(Scenario::Sms);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.run(headless("root", "sftp-server"), &[]);
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(
        script.text().contains("need a terminal"),
        "{}",
        script.text()
    );
    assert!(duo.fake.requests_to("/auth/v2/auth").is_empty());
}

#[test]
fn autopush_skips_the_menu_on_a_terminal_too() {
    let duo = Duo::with(Scenario::Push);
    let d = duo_daemon(&duo, |c| {
        c.wait_prompt = false;
        c.duo.as_mut().unwrap().autopush = Some(true);
    });
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script
            .text()
            .contains("Autopushing login request to phone...")
    );
}

#[test]
fn duo_outages_answer_unavailable_so_the_fail_mode_decides() {
    for scenario in [
        Scenario::Unauthorized,
        Scenario::ServerError,
        Scenario::Malformed,
        Scenario::Hang,
    ] {
        let duo = Duo::with(scenario);
        let d = duo_daemon(&duo, |_| {});
        let started = Instant::now();
        let (outcome, script) = d.run(ssh("root"), &[]);
        let took = started.elapsed();
        match outcome {
            Err(ClientError::Unavailable(reason)) => {
                assert!(reason.contains("Duo"), "{scenario:?}: {reason}")
            }
            other => panic!("{scenario:?}: {other:?}\n{}", script.text()),
        }
        // https_timeout = 2 bounds each try of the request that never gets an answer (a
        // second try goes over a new connection).
        assert!(took < Duration::from_secs(6), "{scenario:?} took {took:?}");
    }
}

#[test]
fn duo_down_answers_unavailable() {
    let duo = Duo::with(Scenario::Push);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = duo_daemon(&duo, |c| {
        c.duo.as_mut().unwrap().host = Some(format!("127.0.0.1:{port}"));
    });
    let (outcome, _) = d.run(ssh("root"), &[]);
    assert!(
        matches!(outcome, Err(ClientError::Unavailable(ref r)) if r.contains("could not connect")),
        "{outcome:?}"
    );
}

#[test]
fn a_rate_limited_preauth_is_retried_after_retry_after() {
    let duo = Duo::with(Scenario::RateLimited);
    let d = duo_daemon(&duo, |_| {});
    let started = Instant::now();
    let (outcome, script) = d.login("root", &["1", ""]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(duo.fake.requests_to("/auth/v2/preauth").len(), 2);
}

#[test]
fn a_skewed_duo_clock_does_not_break_signatures() {
    let duo = Duo::start(|o| {
        o.default_scenario = Scenario::Passcode;
        o.skew = -5400;
    });
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.login("root", &[fake_duo::PASSCODE]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let signed: Vec<_> = duo
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path != "/auth/v2/ping")
        .collect();
    assert!(signed.iter().all(|r| r.rejected.is_none()), "{signed:?}");
}

#[test]
fn logins_share_one_pooled_connection() {
    let duo = Duo::with(Scenario::Passcode);
    let d = duo_daemon(&duo, |_| {});
    // Over the socket, as sshd's logins come: back to back in-process, the next request
    // can start before hyper has put the last connection back in its pool.
    for _ in 0..5 {
        let (outcome, _) = d.run_over_socket(ssh("root"), &[fake_duo::PASSCODE]);
        assert_eq!(outcome.unwrap(), Outcome::Allow);
    }
    assert_eq!(duo.fake.connections(), 1);
    // One /ping for all of them: the clock offset is kept.
    assert_eq!(duo.fake.requests_to("/auth/v2/ping").len(), 1);
}

#[test]
fn users_outside_the_duo_groups_are_not_asked() {
    let duo = Duo::with(Scenario::Push);
    let d = duo_daemon(&duo, |c| {
        c.duo.as_mut().unwrap().groups = Some("no-such-group-here,!root".into());
    });
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(duo.fake.requests().is_empty());
}

#[test]
fn a_failed_group_lookup_asks_duo_nothing_and_leaves_it_to_the_fail_mode() {
    let duo = Duo::with(Scenario::Push);
    let accounts = mfad::accounts::AccountTable::new()
        .with("root", 0, &["root"])
        .failing_groups();
    let d = duo_daemon_with(
        &duo,
        |c| c.duo.as_mut().unwrap().groups = Some("no-such-group-here,!root".into()),
        Some(Arc::new(accounts)),
    );
    let (outcome, script) = d.run(ssh("root"), &[]);
    match outcome {
        Err(ClientError::Unavailable(reason)) => assert!(reason.contains("user database")),
        other => panic!("a failed group lookup decided {other:?}: {}", script.text()),
    }
    assert!(duo.fake.requests().is_empty());
}

#[test]
fn a_provider_error_after_the_challenge_refuses_whatever_the_fail_mode() {
    // Duo asked for a second factor; then /auth (or /auth_status) fails with HTTP 500. The
    // user was challenged: mfad refuses itself rather than leaving it to failmode=safe.
    for (scenario, answers) in [
        (Scenario::AuthError, &["1"][..]),
        (Scenario::StatusError, &["1"][..]),
        (Scenario::AuthError, &[fake_duo::PASSCODE][..]),
    ] {
        let duo = Duo::with(scenario);
        let d = duo_daemon(&duo, |_| {});
        let (outcome, script) = d.run(ssh("root"), answers);
        assert_eq!(
            outcome.unwrap_or_else(|e| panic!("{scenario:?}: {e}\n{}", script.text())),
            Outcome::Deny,
            "{scenario:?}: {}",
            script.text()
        );
        let last_error = script
            .shown
            .iter()
            .rev()
            .find(|l| l.starts_with("error: "))
            .unwrap();
        assert!(
            last_error.contains("Duo had a server error (HTTP 500)")
                && last_error.contains("login refused"),
            "{scenario:?}: {}",
            script.text()
        );
    }
}

#[test]
fn a_push_left_unanswered_past_status_timeout_is_refused_not_unavailable() {
    let duo = Duo::start(|o| {
        o.default_scenario = Scenario::Push;
        o.push_delay = Duration::from_secs(30);
    });
    let d = duo_daemon(&duo, |c| {
        c.wait_prompt = false;
        c.duo.as_mut().unwrap().status_timeout = Some(10);
    });
    let started = Instant::now();
    let (outcome, script) = d.run(ssh("root"), &["1"]);
    assert_eq!(outcome.unwrap(), Outcome::Deny, "{}", script.text());
    assert!(
        script.text().contains("did not answer within 10 s"),
        "{}",
        script.text()
    );
    assert!(started.elapsed() < Duration::from_secs(14));
}

#[test]
fn a_persistent_rate_limit_refuses_the_login() {
    let duo = Duo::with(Scenario::RateLimitedAlways);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, script) = d.run(ssh("root"), &[]);
    assert_eq!(
        outcome.unwrap_or_else(|e| panic!("{e}\n{}", script.text())),
        Outcome::Deny
    );
    assert!(
        script
            .text()
            .contains("error: Duo is rate-limiting logins right now"),
        "{}",
        script.text()
    );
}

#[test]
fn a_clock_step_between_logins_costs_one_re_ping() {
    let duo = Duo::with(Scenario::Passcode);
    let d = duo_daemon(&duo, |_| {});
    let (outcome, _) = d.login("root", &[fake_duo::PASSCODE]);
    assert_eq!(outcome, Outcome::Allow);
    // The host's clock and Duo's step 15 minutes apart (NTP) after mfad's first /ping.
    duo.fake.step_clock(-900);
    let (outcome, script) = d.login("root", &[fake_duo::PASSCODE]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(duo.fake.requests_to("/auth/v2/ping").len(), 2);
    let preauths = duo.fake.requests_to("/auth/v2/preauth");
    assert!(preauths[1].rejected.is_some() && preauths[2].rejected.is_none());
}

#[test]
fn options_work_when_preauth_lists_no_devices() {
    let duo = Duo::with(Scenario::NoDevices);
    let d = duo_daemon(&duo, |c| c.wait_prompt = false);
    let (outcome, script) = d.login("root", &["1"]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        !script.text().contains("neither an option"),
        "{}",
        script.text()
    );
    let auth = &duo.fake.requests_to("/auth/v2/auth")[0];
    assert_eq!(auth.params["factor"], "prompt");
    assert_eq!(auth.params["prompt"], "push1");

    // Without a terminal: Duo's default (push1) with login_duo's line for a push.
    let (outcome, script) = d.run(headless("root", "scp -t /data"), &[]);
    assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
    assert_eq!(
        script.shown[0],
        "info: Autopushing login request to phone...",
        "{}",
        script.text()
    );
    let auth = &duo.fake.requests_to("/auth/v2/auth")[1];
    assert_eq!(auth.params["prompt"], "push1");
}

// ---- mfad's policy over Duo (`[duo] local_policy`, on by default) ----

#[test]
fn a_duo_login_from_a_trusted_network_is_not_sent_to_duo() {
    let duo = Duo::with(Scenario::Push);
    let d = duo_daemon(&duo, |c| {
        c.policy.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
    });
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(duo.fake.requests().is_empty(), "Duo was asked");
}

#[test]
fn a_user_failing_duo_is_locked_by_mfad_after_max_failures() {
    let duo = Duo::with(Scenario::PushDeny);
    let d = duo_daemon(&duo, |c| {
        c.lockout.max_failures = 3;
        c.duo.as_mut().unwrap().prompts = Some(1);
    });
    for _ in 0..3 {
        let (outcome, script) = d.login("root", &["1", ""]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    }
    let asked = duo.fake.requests().len();
    // The fourth login is refused as locked before Duo hears of it.
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.text().contains("locked"), "{}", script.text());
    assert_eq!(
        duo.fake.requests().len(),
        asked,
        "Duo was asked while locked"
    );
}

#[test]
fn with_local_policy_off_duo_alone_decides() {
    let duo = Duo::with(Scenario::PushDeny);
    let d = duo_daemon(&duo, |c| {
        c.lockout.max_failures = 3;
        c.policy.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
        let duo = c.duo.as_mut().unwrap();
        duo.prompts = Some(1);
        duo.local_policy = Some(false);
    });
    for _ in 0..4 {
        // Asked although the network is trusted, and never locked by mfad.
        let (outcome, script) = d.login("root", &["1", ""]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
        assert!(!script.text().contains("locked"), "{}", script.text());
    }
    assert!(duo.fake.requests_to("/auth/v2/auth").len() >= 4);
}
