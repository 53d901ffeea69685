//! OpenSSH security keys as a second factor, in-process: registering one (`mfa enroll
//! security-key`), listing and removing it, and the login pipeline with `[policy]
//! security_key`: a publickey step sshd reports with a registered key passes, anything else
//! is asked for a code, a locked account is refused, and only root's word counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, NewDevice, Operation, Outcome};
use mfa_test_support::{T0, TestDaemon};
use mfad::Config;
use mfad::accounts::AccountTable;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::store::{DeviceKind, NewDeviceRow};
use std::sync::Arc;

const ALICE_UID: u32 = 4242;
const SECRET: &[u8] = b"an-authenticator-key";

/// An ed25519-sk key (`ssh-keygen -l`: `SHA256:nX0hpi5mKbTIJ10yBq5/sLQhiI1Y0RBAqN0drDdgJWs`).
const KEY: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gAAAABHNzaDo=";
const KEY_FINGERPRINT: &str = "SHA256:nX0hpi5mKbTIJ10yBq5/sLQhiI1Y0RBAqN0drDdgJWs";
/// Another ed25519-sk key (public bytes all 9), never registered.
const OTHER_KEY: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJAAAABHNzaDo=";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

fn daemon(security_key: bool) -> TestDaemon {
    let accounts =
        AccountTable::new()
            .with("root", 0, &["root"])
            .with("alice", ALICE_UID, &["users"]);
    TestDaemon::start_with(
        move |c: &mut Config| c.policy.security_key = security_key,
        Some(Arc::new(accounts)),
    )
}

fn code_now(d: &TestDaemon) -> String {
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    totp::code_at_step(SECRET, params(), step).to_string()
}

/// Alice with an authenticator app and (stored directly) the security key `KEY`.
fn alice_with_key(d: &TestDaemon) {
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    let mut s = d.store();
    s.add_totp_device("alice", "phone", SECRET, params(), step - 5, T0)
        .unwrap();
    s.add_device(
        "alice",
        &NewDeviceRow {
            kind: DeviceKind::SecurityKey,
            name: "yubikey".into(),
            otp: None,
            address: Some(KEY.into()),
        },
        T0,
    )
    .unwrap();
}

/// An ssh login of alice whose publickey step used `key`, as sshd's PAM stack reports it.
fn after_publickey(key: &str) -> Operation {
    Operation::Authenticate(AuthContext {
        user: "alice".into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.7".into()),
        tty: Some("ssh".into()),
        ssh_connection: Some("192.0.2.7 50000 192.0.2.1 22".into()),
        ssh_auth_info: Some(format!("publickey {key}\n")),
        ..Default::default()
    })
}

#[test]
fn a_registered_security_key_used_by_sshds_publickey_step_passes_without_a_prompt() {
    let d = daemon(true);
    alice_with_key(&d);
    // Earlier failures: the key's success clears them, as any second factor's does.
    for _ in 0..2 {
        d.store().record_failure("alice", T0, 10, 3600).unwrap();
    }
    let c = d.converse(0, after_publickey(KEY), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
    assert_eq!(d.store().lock_state("alice").unwrap().failures, 0);
    // Among other publickey steps (AuthenticationMethods publickey,publickey) it counts too.
    let both = Operation::Authenticate(AuthContext {
        ssh_auth_info: Some(format!("publickey ssh-ed25519 AAAAC3Nz\npublickey {KEY}\n")),
        ..match after_publickey(KEY) {
            Operation::Authenticate(ctx) => ctx,
            _ => unreachable!(),
        }
    });
    let c = d.converse(0, both, &[]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
}

/// The registered key lets alice in without a prompt (the contrast each test below draws).
fn key_lets_in(d: &TestDaemon, uid: u32) -> bool {
    let c = d.converse(uid, after_publickey(KEY), &[]);
    c.outcome() == Some(Outcome::Allow) && c.prompts() == 0
}

#[test]
fn an_unregistered_security_key_gets_the_passcode_prompt() {
    let d = daemon(true);
    alice_with_key(&d);
    assert!(key_lets_in(&d, 0));
    let c = d.converse(0, after_publickey(OTHER_KEY), &[&code_now(&d)]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(c.prompts(), 1, "{}", c.text());
    // Without the code, no way in.
    let c = d.converse(
        0,
        after_publickey(OTHER_KEY),
        &["000000", "000001", "000002"],
    );
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
}

#[test]
fn with_the_policy_off_a_registered_security_key_gets_the_passcode_prompt() {
    let on = daemon(true);
    alice_with_key(&on);
    assert!(key_lets_in(&on, 0));
    let d = daemon(false);
    alice_with_key(&d);
    let c = d.converse(0, after_publickey(KEY), &[&code_now(&d)]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(c.prompts(), 1, "{}", c.text());
    let c = d.converse(0, after_publickey(KEY), &[]);
    assert_ne!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
}

#[test]
fn auth_info_from_a_non_root_caller_counts_for_nothing() {
    let d = daemon(true);
    alice_with_key(&d);
    assert!(key_lets_in(&d, 0));
    // Alice's own process (her ForceCommand helper, pamtester) can write anything there.
    let c = d.converse(ALICE_UID, after_publickey(KEY), &[&code_now(&d)]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(c.prompts(), 1, "{}", c.text());
    let c = d.converse(ALICE_UID, after_publickey(KEY), &[]);
    assert_ne!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
}

#[test]
fn a_locked_account_is_refused_even_with_its_registered_security_key() {
    let d = daemon(true);
    alice_with_key(&d);
    assert!(key_lets_in(&d, 0));
    d.store().lock_until("alice", T0 + 3600).unwrap();
    let c = d.converse(0, after_publickey(KEY), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
    assert!(c.text().contains("locked"), "{}", c.text());
}

fn enroll(key: &str) -> Operation {
    Operation::AddDevice(NewDevice::SecurityKey {
        name: Some("yubikey".into()),
        public_key: format!("{key} alice@laptop\n"),
    })
}

#[test]
fn a_security_key_is_registered_listed_with_its_fingerprint_and_removed() {
    let d = daemon(true);
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    d.store()
        .add_totp_device("alice", "phone", SECRET, params(), step - 5, T0)
        .unwrap();
    // A device change needs a fresh second factor first.
    let c = d.converse(ALICE_UID, enroll(KEY), &["000000", "000001", "000002"]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert_eq!(d.store().devices("alice").unwrap().len(), 1);
    let c = d.converse(ALICE_UID, enroll(KEY), &[&code_now(&d)]);
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert!(c.text().contains(KEY_FINGERPRINT), "{}", c.text());
    let devices = d.store().devices("alice").unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[1].kind, DeviceKind::SecurityKey);
    assert_eq!(devices[1].address.as_deref(), Some(KEY));

    let c = d.converse(ALICE_UID, Operation::ListDevices, &[]);
    assert!(
        c.text().contains(&format!(
            "2. yubikey (security key ED25519-SK {KEY_FINGERPRINT})"
        )),
        "{}",
        c.text()
    );
    // The same key twice: refused, nothing added.
    d.clock.advance(60);
    let c = d.converse(ALICE_UID, enroll(KEY), &[&code_now(&d)]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert!(c.text().contains("registered already"), "{}", c.text());
    assert_eq!(d.store().devices("alice").unwrap().len(), 2);

    // Removed like any device; then the key no longer opens a login.
    d.clock.advance(60);
    let c = d.converse(
        ALICE_UID,
        Operation::RemoveDevice { index: 2 },
        &[&code_now(&d)],
    );
    assert_eq!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
    assert_eq!(d.store().devices("alice").unwrap().len(), 1);
    let c = d.converse(0, after_publickey(KEY), &[]);
    assert_ne!(c.outcome(), Some(Outcome::Allow), "{}", c.text());
}

#[test]
fn a_plain_ssh_key_is_refused_saying_why_and_nothing_is_asked_or_stored() {
    let d = daemon(true);
    let plain = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let c = d.converse(ALICE_UID, enroll(plain), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
    assert!(c.text().contains("not a second factor"), "{}", c.text());
    assert!(c.text().contains("a copied key file"), "{}", c.text());
    // The type named must be the type inside.
    let ecdsa_named = KEY.replace(
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    );
    let c = d.converse(ALICE_UID, enroll(&ecdsa_named), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert!(c.text().contains("the key inside is"), "{}", c.text());
    assert!(d.store().devices("alice").unwrap().is_empty());
}

#[test]
fn a_schema_2_database_keeps_its_devices_and_takes_security_keys_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v2.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for sql in &mfad::store::sqlite::MIGRATIONS[..2] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute(
        "INSERT INTO devices(user, kind, name, address, is_default, created, sealed)
         VALUES ('u', 'phone', 'mobile', '+15555551234', 1, 7, 1)",
        [],
    )
    .unwrap();
    // Schema 2 has no room for the new kind.
    assert!(
        conn.execute(
            "INSERT INTO devices(user, kind, name, created) VALUES ('u', 'security-key', 'k', 0)",
            [],
        )
        .is_err()
    );
    drop(conn);
    let mut s = mfad::store::Store::open_with_key_file(&db, &dir.path().join("key")).unwrap();
    let row = NewDeviceRow {
        kind: DeviceKind::SecurityKey,
        name: "yubikey".into(),
        otp: None,
        address: Some(KEY.into()),
    };
    s.add_device("u", &row, 8).unwrap();
    let devices = s.devices("u").unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(
        (
            devices[0].kind,
            devices[0].address.as_deref(),
            devices[0].is_default
        ),
        (DeviceKind::Phone, Some("+15555551234"), true)
    );
    assert_eq!(devices[1].kind, DeviceKind::SecurityKey);
    assert_eq!(
        devices[1].security_key().unwrap().fingerprint(),
        KEY_FINGERPRINT
    );
}

#[test]
fn postgresql_stores_a_security_key_after_its_migration() {
    use mfad::store::postgres::{self, PgOptions};
    let pg = mfa_test_support::postgres::TestPostgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = Arc::new(mfad::sealing::StoreKey::generate().unwrap());
    let opts = PgOptions {
        url: pg.url(),
        password_file: Some(pg.password_file()),
        ca_file: None,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(2),
    };
    rt.block_on(postgres::prepare(&opts, &key.check_value()))
        .unwrap();
    let backend = rt.block_on(postgres::connect(&opts)).unwrap();
    let mut s = mfad::store::Store::from_backend(Box::new(backend), key).unwrap();
    let row = NewDeviceRow {
        kind: DeviceKind::SecurityKey,
        name: "yubikey".into(),
        otp: None,
        address: Some(KEY.into()),
    };
    s.add_device("u", &row, 8).unwrap();
    let devices = s.devices("u").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        devices[0].security_key().unwrap().fingerprint(),
        KEY_FINGERPRINT
    );
}

#[test]
fn a_user_whose_only_device_is_a_security_key_is_told_to_log_in_with_it_not_asked_a_code() {
    let d = daemon(true);
    d.store()
        .add_device(
            "alice",
            &NewDeviceRow {
                kind: DeviceKind::SecurityKey,
                name: "yubikey".into(),
                otp: None,
                address: Some(KEY.into()),
            },
            T0,
        )
        .unwrap();
    assert!(key_lets_in(&d, 0));
    let c = d.converse(0, after_publickey(OTHER_KEY), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
    assert!(c.text().contains("log in with that key"), "{}", c.text());
    // Nothing was attempted: no failure counted.
    assert_eq!(d.store().lock_state("alice").unwrap().failures, 0);
    // Her own helper cannot vouch for the key: told it cannot be used this way.
    let c = d.converse(ALICE_UID, after_publickey(KEY), &[]);
    assert_eq!(c.outcome(), Some(Outcome::Deny), "{}", c.text());
    assert_eq!(c.prompts(), 0, "{}", c.text());
    assert!(c.text().contains("cannot use"), "{}", c.text());
}
