//! mfad's `[policy]` end to end, through the private sshd with the real clients: trusted
//! networks, exempt and required groups, remembered second factors (by address and by key),
//! and enrolment during the login, offered only from trusted networks.
//!
//! 127.0.0.1 and 127.0.0.2 are both this machine; a client bound to 127.0.0.2 (`BindAddress`)
//! is the "other network" whenever only 127.0.0.1/32 is trusted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::clock;
use mfa_e2e::env::{SftpSubsystem, SshSetup};
use mfa_e2e::ssh::CODE_OF_SHOWN_SECRET;
use mfa_e2e::user::TestGroup;
use mfa_e2e::{LoginOutcome, TestEnv, TotpSecret};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OTHER_ADDRESS: &str = "127.0.0.2";
const TRUST_LOOPBACK_ONE: &str = "[policy]\ntrusted_networks = [\"127.0.0.1/32\"]\n";

fn payload(env: &TestEnv, name: &str) -> PathBuf {
    let path = env.dir.join(name);
    std::fs::write(&path, format!("{name} carried through the policy\n")).unwrap();
    path
}

fn in_home(env: &TestEnv, name: &str) -> PathBuf {
    Path::new(&env.user().unwrap().home).join(name)
}

/// Only the password was asked: no second-factor prompt at all.
fn assert_password_only(run: &LoginOutcome) {
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.prompts.len(), 1, "{}", run.describe());
    assert!(run.prompts[0].ends_with("Password: "), "{}", run.describe());
}

/// The password, then one passcode prompt.
fn assert_passcode_asked(run: &LoginOutcome) {
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.prompts.len(), 2, "{}", run.describe());
    assert!(run.prompts[1].ends_with("Passcode: "), "{}", run.describe());
}

/// The decision lines mfad logged for this world's user with `reason` in them.
fn decisions(env: &TestEnv, reason: &str) -> usize {
    env.mfad_log()
        .lines()
        .filter(|l| l.contains(&format!("user={} ", env.username())) && l.contains(reason))
        .count()
}

#[test]
fn trusted_network_skips_the_second_factor_and_other_addresses_are_asked() {
    let env = TestEnv::builder()
        .mfad_toml(TRUST_LOOPBACK_ONE)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let local = payload(&env, "trusted.txt");

    let copy = env
        .client
        .scp_upload(&local, "trusted.txt", &[env.password()])
        .unwrap();
    assert_password_only(&copy);
    assert_eq!(
        std::fs::read(in_home(&env, "trusted.txt")).unwrap(),
        std::fs::read(&local).unwrap()
    );
    let run = env.login(&[], "echo from a trusted network").unwrap();
    assert_password_only(&run);
    assert_eq!(run.stdout, "from a trusted network\n");
    assert_eq!(decisions(&env, "reason=\"trusted network\""), 2);

    let elsewhere = env.client.from_address(OTHER_ADDRESS);
    let code = device.totp.fresh_code();
    let run = elsewhere
        .login(&[env.password(), &code], "echo from elsewhere")
        .unwrap();
    assert_passcode_asked(&run);
    assert_eq!(run.stdout, "from elsewhere\n");
    assert!(
        env.mfad_log().contains("rhost=127.0.0.2 service="),
        "{}",
        env.mfad_log()
    );
}

#[test]
fn trusted_network_lets_transfers_through_the_forcecommand_helper() {
    // A TOTP-only user has no default that works without a terminal, so scp would be
    // refused; from a trusted network nothing is asked at all.
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server))
        .mfad_toml(TRUST_LOOPBACK_ONE)
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();
    let local = payload(&env, "helper.txt");

    let copy = env
        .client
        .scp(&[], &local, env.client.remote("helper.txt"), &[])
        .unwrap();
    assert_eq!(copy.status, Some(0), "{}", copy.describe());
    assert!(copy.prompts.is_empty(), "{}", copy.describe());
    assert_eq!(
        std::fs::read(in_home(&env, "helper.txt")).unwrap(),
        std::fs::read(&local).unwrap()
    );

    let refused = env
        .client
        .from_address(OTHER_ADDRESS)
        .scp(&[], &local, env.client.remote("elsewhere.txt"), &[])
        .unwrap();
    assert_ne!(refused.status, Some(0), "{}", refused.describe());
    assert!(!in_home(&env, "elsewhere.txt").exists());
    // Refused by mfad for the reason that address is not trusted: the TOTP-only user has
    // no default that works without a terminal. The trusted copy was decided as trusted.
    let log = env.mfad_log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("user={} ", env.username())) && l.contains("outcome=deny"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].contains(&format!("rhost={OTHER_ADDRESS} "))
            && refusals[0]
                .contains("reason=\"no usable default method for a session without a terminal"),
        "{log}"
    );
    assert_eq!(decisions(&env, "reason=\"trusted network\""), 1, "{log}");
}

#[test]
fn exempt_group_skips_the_second_factor() {
    let group = TestGroup::create().unwrap();
    let env = TestEnv::builder()
        // Group changes reach mfad within user_cache seconds (5 by default); this test
        // changes them between two logins, so it keeps nothing.
        .mfad_toml(&format!(
            "user_cache = 0\n[policy]\nexempt_groups = [\"{}\"]\n",
            group.name
        ))
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let local = payload(&env, "exempt.txt");

    // Not a member yet: asked.
    let code = device.totp.fresh_code();
    let run = env.login(&[&code], "echo member of nothing").unwrap();
    assert_passcode_asked(&run);

    env.user().unwrap().join_group(&group.name).unwrap();
    let copy = env
        .client
        .scp_upload(&local, "exempt.txt", &[env.password()])
        .unwrap();
    assert_password_only(&copy);
    assert!(in_home(&env, "exempt.txt").exists());
    assert_eq!(
        decisions(
            &env,
            &format!("reason=\"member of exempt group {}\"", group.name)
        ),
        1,
        "{}",
        env.mfad_log()
    );
}

#[test]
fn require_groups_ask_only_their_members_and_exempt_wins_over_required() {
    let required = TestGroup::create().unwrap();
    let exempt = TestGroup::create().unwrap();
    let env = TestEnv::builder()
        .mfad_toml(&format!(
            "user_cache = 0\n[policy]\nrequire_groups = [\"{}\"]\nexempt_groups = [\"{}\"]\n",
            required.name, exempt.name
        ))
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();

    let run = env.login(&[], "echo not required").unwrap();
    assert_password_only(&run);
    assert_eq!(decisions(&env, "reason=\"in none of require_groups\""), 1);

    env.user().unwrap().join_group(&required.name).unwrap();
    let code = device.totp.fresh_code();
    let run = env.login(&[&code], "echo required").unwrap();
    assert_passcode_asked(&run);

    env.user().unwrap().join_group(&exempt.name).unwrap();
    let run = env.login(&[], "echo exempt wins").unwrap();
    assert_password_only(&run);
    assert_eq!(run.stdout, "exempt wins\n");
}

#[test]
fn remembered_second_factor_skips_within_the_window_and_asks_after_it_or_elsewhere() {
    const REMEMBER: u64 = 6;
    let env = TestEnv::builder()
        .mfad_toml(&format!("[policy]\nremember_for = {REMEMBER}\n"))
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let local = payload(&env, "again.txt");

    let code = device.totp.fresh_code();
    let first = env
        .client
        .scp_upload(&local, "first.txt", &[env.password(), &code])
        .unwrap();
    let remembered_at = Instant::now();
    assert_passcode_asked(&first);

    // A GUI client's next connection, right after: not asked.
    let second = env
        .client
        .scp_upload(&local, "second.txt", &[env.password()])
        .unwrap();
    assert!(
        remembered_at.elapsed() < Duration::from_secs(REMEMBER),
        "the machine is too slow for this window"
    );
    assert_password_only(&second);
    assert!(in_home(&env, "second.txt").exists());
    assert_eq!(
        decisions(&env, "reason=\"remembered from this address and key\""),
        1
    );

    // The same user from another address is asked.
    let code = device.totp.fresh_code();
    let elsewhere = env
        .client
        .from_address(OTHER_ADDRESS)
        .scp_upload(&local, "elsewhere.txt", &[env.password(), &code])
        .unwrap();
    assert_passcode_asked(&elsewhere);

    // After the window: asked again.
    let code = device.totp.fresh_code();
    let wait = Duration::from_secs(REMEMBER + 1).saturating_sub(remembered_at.elapsed());
    clock::pause(wait);
    let third = env
        .client
        .scp_upload(&local, "third.txt", &[env.password(), &code])
        .unwrap();
    assert_passcode_asked(&third);
    assert_eq!(
        decisions(&env, "reason=\"remembered from this address and key\""),
        1,
        "{}",
        env.mfad_log()
    );
}

#[test]
fn remembered_second_factor_is_bound_to_the_key_sshd_exposes() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .mfad_toml("[policy]\nremember_for = 300\n")
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let other_key = env.add_user_key("second").unwrap();

    let code = device.totp.fresh_code();
    let first = env.login(&[&code], "echo key one").unwrap();
    assert_passcode_asked(&first);

    let again = env.login(&[], "echo key one again").unwrap();
    assert_password_only(&again);
    assert_eq!(again.stdout, "key one again\n");

    let with_other_key = env.client.with_key(&other_key);
    let code = device.totp.fresh_code();
    let other = with_other_key
        .login(&[env.password(), &code], "echo key two")
        .unwrap();
    assert_passcode_asked(&other);
    assert_eq!(other.stdout, "key two\n");
    assert_eq!(
        decisions(&env, "reason=\"remembered from this address and key\""),
        1,
        "{}",
        env.mfad_log()
    );
}

#[test]
fn unenrolled_user_enrols_during_the_login_from_a_trusted_network_and_the_command_runs() {
    let env = TestEnv::builder()
        .unenrolled("enroll")
        .mfad_toml(TRUST_LOOPBACK_ONE)
        .start()
        .unwrap();

    let run = env
        .login(&[CODE_OF_SHOWN_SECRET], "echo enrolled and in")
        .unwrap();
    println!("{}", run.describe());
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.stdout, "enrolled and in\n");
    assert_eq!(run.prompts.len(), 2, "{}", run.describe());
    let shown = &run.prompts[1];
    assert!(shown.contains("Scan this QR code"), "{shown}");
    let uri = shown
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth:// line: {shown}"));
    // The QR code drawn in the prompt is that URI, as a phone's camera reads it.
    let scanned = mfa_e2e::qr::decode_drawn_qr(shown, &env.dir).unwrap();
    assert_eq!(scanned, uri, "{shown}");
    assert!(
        shown.ends_with("Enter the code your device shows to finish: "),
        "{shown}"
    );
    assert!(run.stderr.contains("Enrolled"), "{}", run.describe());

    // The phone now holds the secret the login showed: its codes are what is asked from
    // an untrusted address.
    let secret = shown
        .lines()
        .find_map(mfa_e2e::cli::secret_in_line)
        .unwrap();
    let mut totp = TotpSecret::from_base32(&secret, 6, 30, 1).unwrap();
    // The enrolment spent the current step.
    let _ = totp.current_code();
    let code = totp.fresh_code();
    let later = env
        .client
        .from_address(OTHER_ADDRESS)
        .login(&[env.password(), &code], "echo second login")
        .unwrap();
    assert_passcode_asked(&later);
    assert_eq!(later.stdout, "second login\n");
}

#[test]
fn unenrolled_user_is_refused_enrolment_outside_trusted_networks() {
    let env = TestEnv::builder()
        .unenrolled("enroll")
        .mfad_toml(TRUST_LOOPBACK_ONE)
        .start()
        .unwrap();

    let started = Instant::now();
    let run = env
        .client
        .from_address(OTHER_ADDRESS)
        .login(&[env.password(), "123456", "123456"], "echo should not run")
        .unwrap();
    println!("{}", run.describe());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(run.refused(), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());
    assert!(
        !run.shown().contains("otpauth://") && !run.shown().contains("Secret:"),
        "a secret was shown to an untrusted address: {}",
        run.describe()
    );
    assert!(
        run.shown()
            .contains("only offered from the site's own networks"),
        "{}",
        run.describe()
    );
    assert_eq!(
        decisions(
            &env,
            "reason=\"not enrolled; enrolment refused outside trusted networks\""
        ),
        1,
        "{}",
        env.mfad_log()
    );
    let devices = env
        .cli
        .as_user(env.user().unwrap(), &["devices"], "")
        .unwrap();
    assert!(
        !devices.stdout.contains("Authenticator app"),
        "{}",
        devices.describe()
    );
}
