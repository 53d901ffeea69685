//! The web role: only mfad's web front (the `[web] user`, or root) may show or answer a
//! login's approval, and mfad, not the web front, checks the voice provider's signatures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use mfa_proto::{Operation, ServerMsg, WebAnswer, WebDecision, WebReply, WebRequest};
use mfa_test_support::{T0, TestDaemon};
use mfad::accounts::AccountTable;
use mfad::oob::{ApprovalConfig, ApprovalMethod, ApprovalRequest, Secret, TwilioConfig};
use sha1::Sha1;
use std::sync::Arc;
use std::time::Duration;

const WEB_UID: u32 = 990;
const MALLORY_UID: u32 = 1234;
const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";

fn daemon() -> TestDaemon {
    let accounts = AccountTable::new()
        .with("mfa-web", WEB_UID, &["mfa-web"])
        .with("mallory", MALLORY_UID, &["users"])
        .with("alice", 1001, &["users"]);
    TestDaemon::start_with(
        |config| {
            config.approval = Some(ApprovalConfig {
                public_url: "http://mfa.example.org/prefix".into(),
                ..ApprovalConfig::default()
            });
            config.twilio = Some(TwilioConfig {
                api_base: "http://127.0.0.1:9".into(),
                account_sid: "AC0123".into(),
                auth_token: Secret::new(AUTH_TOKEN),
                from: "+15550001111".into(),
                ..TwilioConfig::default()
            });
        },
        Some(Arc::new(accounts)),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// alice's login, waiting for her phone.
fn pending(d: &TestDaemon, rt: &tokio::runtime::Runtime, method: ApprovalMethod) -> String {
    let request = ApprovalRequest {
        user: "alice".into(),
        host: "login1".into(),
        rhost: "192.0.2.10".into(),
        method,
        created: T0,
        adding_device: false,
    };
    let pending = rt
        .block_on(
            d.daemon()
                .approvals()
                .create(request, Duration::from_secs(60)),
        )
        .unwrap();
    let token = pending.token.clone();
    // The login keeps waiting (its receiver alive) for the whole test.
    std::mem::forget(pending);
    token
}

fn approve(token: &str) -> Operation {
    Operation::Web(WebRequest::DecideApproval {
        token: token.into(),
        answer: WebAnswer::Approve,
        number: None,
    })
}

#[test]
fn a_user_asking_for_the_web_role_is_refused_and_cannot_approve_a_push() {
    let d = daemon();
    let rt = runtime();
    let token = pending(&d, &rt, ApprovalMethod::Push);

    // mallory, who holds alice's link, asks mfad directly instead of through the web front.
    for op in [
        approve(&token),
        Operation::Web(WebRequest::ShowApproval {
            token: token.clone(),
        }),
    ] {
        let got = d.converse(MALLORY_UID, op, &[]);
        assert!(
            matches!(got.said.as_slice(), [ServerMsg::Unavailable { reason }] if reason.contains("web front")),
            "{:?}",
            got.said
        );
    }
    // Nothing was decided: alice's request still waits, and the web front can answer it.
    assert!(rt.block_on(d.daemon().approvals().peek(&token)).is_some());
    let got = d.converse(WEB_UID, approve(&token), &[]);
    assert_eq!(
        got.said,
        vec![ServerMsg::Web {
            reply: WebReply::Decided {
                decision: WebDecision::Approved,
                waiting: true
            }
        }]
    );
    assert!(rt.block_on(d.daemon().approvals().peek(&token)).is_none());
}

#[test]
fn root_may_use_the_web_role() {
    let d = daemon();
    let rt = runtime();
    let token = pending(&d, &rt, ApprovalMethod::Push);
    let got = d.converse(0, Operation::Web(WebRequest::ShowApproval { token }), &[]);
    match got.said.as_slice() {
        [
            ServerMsg::Web {
                reply: WebReply::Approval { page },
            },
        ] => {
            assert_eq!(page.user, "alice");
            assert_eq!(page.rhost, "192.0.2.10");
        }
        other => panic!("{other:?}"),
    }
}

fn twilio_sign(url: &str, form: &[(&str, &str)]) -> String {
    let mut sorted = form.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(AUTH_TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(&mac.finalize().into_bytes())
}

/// Through the web front (mfa-web's server, relaying over mfad's socket): a callback that
/// the provider did not sign is refused by mfad, and decides nothing.
#[test]
fn a_forged_voice_callback_forwarded_by_the_web_front_is_refused_by_mfad() {
    let d = daemon();
    let rt = runtime();
    let token = pending(&d, &rt, ApprovalMethod::Call);
    let web = d.web_url().unwrap();
    let path = format!("/twilio/gather/{token}");
    let form = [("CallSid", "CA0123"), ("Digits", "1")];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let post = |signature: &str| {
        rt.block_on(async {
            let resp = client
                .post(format!("{web}{path}"))
                .header("X-Twilio-Signature", signature)
                .form(&form)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    // Signed with another key, over the right URL; signed with the right key, over another
    // URL (the web front's own address instead of the public one).
    let mut mac = Hmac::<Sha1>::new_from_slice(b"not-the-auth-token").unwrap();
    mac.update(format!("http://mfa.example.org/prefix{path}CallSidCA0123Digits1").as_bytes());
    let other_key = BASE64.encode(&mac.finalize().into_bytes());
    for forged in [
        other_key,
        twilio_sign(&format!("{web}{path}"), &form),
        String::new(),
    ] {
        let (status, body) = post(&forged);
        assert_eq!(status, 403, "{forged:?}: {body}");
    }
    assert!(rt.block_on(d.daemon().approvals().peek(&token)).is_some());
    // The real signature, over the public URL mfad knows, is taken.
    let (status, body) = post(&twilio_sign(
        &format!("http://mfa.example.org/prefix{path}"),
        &form,
    ));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Approved"), "{body}");
    assert!(rt.block_on(d.daemon().approvals().peek(&token)).is_none());
}
