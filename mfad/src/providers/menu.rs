//! What a login looks like to the user, whichever provider proves it: the menu, how an
//! answer is read, the default method of a session without a terminal, and the wait for
//! the phone. Both providers use these, so their logins cannot drift apart.

use crate::conn::{Conn, ConnError};
use mfa_proto::{AuthContext, AuthMode, ServerMsg};
use std::future::Future;
use tokio::sync::mpsc;

/// The menu, from its first line to the prompt: `title` (e.g. "Two-factor login for
/// alice"), then the numbered `labels`; without any, `no_options` says what to type.
/// Returns the text and the prompt.
pub(crate) fn render(title: &str, labels: &[String], no_options: &str) -> (String, String) {
    if labels.is_empty() {
        return (
            format!("{title}\n\n{no_options}\n"),
            "Passcode: ".to_string(),
        );
    }
    let mut text =
        format!("{title}\n\nEnter a passcode or select one of the following options:\n\n");
    for (i, label) in labels.iter().enumerate() {
        text.push_str(&format!(" {}. {label}\n", i + 1));
    }
    (text, format!("Passcode or option (1-{}): ", labels.len()))
}

/// What an answer at the menu's prompt is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// Nothing typed: the default method.
    Default,
    /// Option `i` (from 0) of the menu.
    Option(usize),
    /// A number of at most two digits that is no option: what to tell the user.
    NoSuchOption(String),
    /// Anything else (trimmed): a passcode, or what a provider reads itself.
    Other(&'a str),
}

/// Reads an answer to a menu of `options` options. One or two digits are an option number
/// (no passcode is that short); an empty answer is the default.
pub(crate) fn read_answer(answer: &str, options: usize) -> Answer<'_> {
    let short = answer.trim();
    if short.is_empty() {
        return Answer::Default;
    }
    if short.len() <= 2 && short.bytes().all(|b| b.is_ascii_digit()) {
        return match short.parse::<usize>() {
            Ok(n) if (1..=options).contains(&n) => Answer::Option(n - 1),
            _ if options == 0 => Answer::NoSuchOption("That is not a passcode.".to_string()),
            _ => Answer::NoSuchOption(format!(
                "There is no option {short}; choose 1 to {options}."
            )),
        };
    }
    Answer::Other(short)
}

/// Whether a login gets the menu: the client can prompt and asked for it (`mode=menu`).
/// Otherwise (scp, sftp, rsync, the ForceCommand helper without a terminal, `mode=auto`)
/// the default method runs at once.
pub(crate) fn shows_menu(ctx: &AuthContext) -> bool {
    ctx.mode == AuthMode::Menu && ctx.can_prompt
}

/// The refusal when a session without a terminal has no default method that works
/// without one. `default` names the default when it exists but needs typing ("SMS
/// passcodes"); `fix` says what the user can do about it.
pub(crate) fn no_headless_default(user: &str, default: Option<&str>, fix: &str) -> String {
    match default {
        Some(what) => format!(
            "The default method for {user} is {what}, which need a terminal to type them. \
             {fix}"
        ),
        None => format!(
            "Two-factor login for {user} needs a default method that works without a \
             terminal (push or phone call), and there is none.\n{fix}"
        ),
    }
}

/// Waits for the phone (a push or call answered, or the provider's verdict), telling the
/// user `waiting` and then each line from `updates` as it comes. With `press_enter`, the
/// waiting text goes into a prompt the user confirms with Enter: OpenSSH before 10.3 shows
/// PAM text only together with a prompt (bug 2876). The Enter and the phone's answer may
/// come in either order; both are awaited, each with its own bound (the answer timeout,
/// the provider's), and lines that arrive before the Enter follow it.
pub(crate) async fn wait_for_phone<T>(
    conn: &mut Conn,
    waiting: &str,
    press_enter: bool,
    mut updates: Option<mpsc::Receiver<String>>,
    done: impl Future<Output = T>,
) -> Result<T, ConnError> {
    tokio::pin!(done);
    let mut result = None;
    if press_enter {
        conn.send(&ServerMsg::Prompt {
            text: format!("{waiting}\nPress Enter once you have answered it: "),
            echo: true,
        })
        .await?;
        let mut held = Vec::new();
        let answered = {
            let answer = conn.answer();
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    a = &mut answer => break a,
                    r = &mut done, if result.is_none() => result = Some(r),
                    Some(line) = next_line(&mut updates), if result.is_none() => held.push(line),
                }
            }
        };
        if let Err(e) = answered {
            // The client broke off: the wait still runs to its end (bounded), so a pending
            // request is withdrawn as the bound has it, not left for a late tap.
            if result.is_none() {
                done.await;
            }
            return Err(e);
        }
        for line in held {
            conn.info(line).await?;
        }
    } else {
        conn.info(waiting).await?;
    }
    let result = match result {
        Some(r) => r,
        None => {
            // Waiting for the phone: the user's time, not mfad's.
            conn.waiting_for_user();
            let r = loop {
                tokio::select! {
                    r = &mut done => break r,
                    Some(line) = next_line(&mut updates) => conn.info(line).await?,
                }
            };
            conn.at_work();
            r
        }
    };
    // Lines sent just before the verdict are shown before it.
    if let Some(rx) = updates.as_mut() {
        while let Ok(line) = rx.try_recv() {
            conn.info(line).await?;
        }
    }
    Ok(result)
}

/// The next line of `updates`; never resolves when there are none (or no more).
async fn next_line(updates: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match updates {
        Some(rx) => match rx.recv().await {
            Some(line) => Some(line),
            None => {
                *updates = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ScriptDialogue, Timeouts};
    use std::time::Duration;

    #[test]
    fn the_menu_has_the_seed_shape() {
        let labels = ["Push to Pixel 8", "Phone call to XXX-XXX-1234"].map(String::from);
        let (text, prompt) = render("Two-factor login for abc123", &labels, "unused");
        assert_eq!(
            text,
            "Two-factor login for abc123\n\nEnter a passcode or select one of the following \
             options:\n\n 1. Push to Pixel 8\n 2. Phone call to XXX-XXX-1234\n"
        );
        assert_eq!(prompt, "Passcode or option (1-2): ");
        let (text, prompt) = render("Two-factor login for abc123", &[], "Enter a passcode.");
        assert_eq!(text, "Two-factor login for abc123\n\nEnter a passcode.\n");
        assert_eq!(prompt, "Passcode: ");
    }

    #[test]
    fn answers_are_the_default_an_option_or_something_else() {
        assert_eq!(read_answer("  ", 3), Answer::Default);
        assert_eq!(read_answer(" 2 ", 3), Answer::Option(1));
        assert_eq!(
            read_answer("7", 3),
            Answer::NoSuchOption("There is no option 7; choose 1 to 3.".into())
        );
        assert_eq!(
            read_answer("0", 0),
            Answer::NoSuchOption("That is not a passcode.".into())
        );
        assert_eq!(read_answer("123456", 3), Answer::Other("123456"));
        assert_eq!(read_answer("push1", 3), Answer::Other("push1"));
    }

    fn conn(answers: &[&str]) -> (Conn, ScriptDialogue) {
        let script = ScriptDialogue::answering(answers);
        let timeouts = Timeouts {
            hello: Duration::from_secs(1),
            answer: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
        };
        (Conn::over(Box::new(script.clone()), 0, timeouts), script)
    }

    fn texts(said: &[ServerMsg]) -> Vec<String> {
        said.iter()
            .map(|m| match m {
                ServerMsg::Info { text } => format!("info: {text}"),
                ServerMsg::Prompt { text, .. } => format!("prompt: {text}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_before_the_enter_follow_it_and_later_ones_come_as_they_arrive() {
        let (mut conn, script) = conn(&[""]);
        let (tx, rx) = mpsc::channel(4);
        tx.send("Pushed.".to_string()).await.unwrap();
        let verdict = async move {
            tx.send("Still waiting.".to_string()).await.unwrap();
            "approved"
        };
        let got = wait_for_phone(&mut conn, "Calling...", true, Some(rx), verdict)
            .await
            .unwrap();
        assert_eq!(got, "approved");
        assert_eq!(
            texts(&script.said()),
            [
                "prompt: Calling...\nPress Enter once you have answered it: ",
                "info: Pushed.",
                "info: Still waiting.",
            ]
        );
    }

    #[tokio::test]
    async fn a_client_that_breaks_off_at_the_prompt_still_waits_the_request_out() {
        // No answer left: the client hangs up at the "Press Enter" prompt.
        let (mut conn, _) = conn(&[]);
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&finished);
        let verdict = async move {
            tokio::task::yield_now().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let got = wait_for_phone(&mut conn, "Pushed.", true, None, verdict).await;
        assert!(got.is_err());
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn without_the_enter_prompt_the_waiting_line_is_shown_and_nothing_is_asked() {
        let (mut conn, script) = conn(&[]);
        let got = wait_for_phone(&mut conn, "Pushed a login request...", false, None, async {
            7
        })
        .await
        .unwrap();
        assert_eq!(got, 7);
        assert_eq!(texts(&script.said()), ["info: Pushed a login request..."]);
        assert_eq!(script.unanswered(), 0);
    }
}
