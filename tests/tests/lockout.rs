//! Consecutive wrong codes lock the account; it unlocks by itself or by an admin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::{CliOutput, TestEnv, clock};
use std::time::Duration;

fn locked_line(status: &CliOutput) -> String {
    status
        .stdout
        .lines()
        .find(|l| l.trim_start().to_lowercase().starts_with("locked"))
        .unwrap_or_default()
        .to_lowercase()
}

#[test]
fn ten_wrong_codes_lock_the_account_until_an_admin_unlocks_it() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();
    let wrongs = [wrong.as_str(), wrong.as_str(), wrong.as_str()];

    // Three logins of three wrong codes each: nine failures, not locked yet.
    for n in 1..=3 {
        let login = env.login(&wrongs, "true").unwrap();
        assert!(login.refused(), "login {n}: {}", login.describe());
        assert_eq!(
            login.prompts_containing("Passcode: "),
            3,
            "login {n}: {}",
            login.describe()
        );
    }
    let status = env.admin("status").unwrap();
    assert_eq!(status.status, Some(0), "{}", status.describe());
    assert!(locked_line(&status).contains("no"), "{}", status.describe());

    // The tenth failure locks, and says so.
    let tenth = env.login(&wrongs, "true").unwrap();
    assert!(tenth.refused(), "{}", tenth.describe());
    assert_eq!(
        tenth.prompts_containing("Passcode: "),
        1,
        "{}",
        tenth.describe()
    );
    assert!(tenth.shown().contains("locked"), "{}", tenth.describe());
    let status = env.admin("status").unwrap();
    assert!(
        locked_line(&status).contains("yes"),
        "{}",
        status.describe()
    );

    // Locked: even the right code is not asked for, let alone checked.
    let code = device.totp.fresh_code();
    let locked = env.login(&[&code], "echo should not run").unwrap();
    println!("{}", locked.describe());
    assert!(locked.refused(), "{}", locked.describe());
    assert!(locked.shown().contains("locked"), "{}", locked.describe());
    assert_eq!(
        locked.prompts_containing("Passcode: "),
        0,
        "{}",
        locked.describe()
    );

    let unlock = env.admin("unlock").unwrap();
    assert_eq!(unlock.status, Some(0), "{}", unlock.describe());
    let status = env.admin("status").unwrap();
    assert!(locked_line(&status).contains("no"), "{}", status.describe());

    // The code offered while locked was never checked, so it still opens the login.
    let login = env.login(&[&code], "echo unlocked").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "unlocked");
}

#[test]
fn lock_lifts_by_itself_after_the_configured_duration() {
    // Long enough that a loaded machine still checks within the lock, and again after it.
    const LOCK_SECS: u64 = 20;
    let env = TestEnv::builder().lockout(3, LOCK_SECS).start().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();

    // The lock begins during this login: after `began`, before `ended`.
    let began = clock::deadline(Duration::ZERO);
    let login = env.login(&[&wrong, &wrong, &wrong], "true").unwrap();
    let ended = clock::deadline(Duration::ZERO);
    assert!(login.refused(), "{}", login.describe());
    assert!(login.shown().contains("locked"), "{}", login.describe());

    // Half-way through the lock it still holds: the user is told, and not asked for a
    // passcode.
    let half_way = began + Duration::from_secs(LOCK_SECS / 2);
    while !clock::passed(half_way) {
        clock::pause(Duration::from_millis(100));
    }
    let code = device.totp.fresh_code();
    let locked = env.login(&[&code], "echo should not run").unwrap();
    println!("{}", locked.describe());
    assert!(
        !clock::passed(began + Duration::from_secs(LOCK_SECS)),
        "the machine is too slow to check the lock before it ends"
    );
    assert!(locked.refused(), "{}", locked.describe());
    assert!(locked.shown().contains("locked"), "{}", locked.describe());
    assert_eq!(
        locked.prompts_containing("Passcode: "),
        0,
        "{}",
        locked.describe()
    );

    // Once the duration has passed, the next login gets in without an unlock.
    let after = ended + Duration::from_secs(LOCK_SECS + 1);
    while !clock::passed(after) {
        clock::pause(Duration::from_millis(100));
    }
    let code = device.totp.fresh_code();
    let login = env.login(&[&code], "echo lock expired").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "lock expired");
}
