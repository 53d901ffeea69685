//! The terminal side of a conversation, for the two programs a person runs by hand: the
//! `mfa` command line and the `mfa-login-prompt` ForceCommand helper. mfad's text goes to
//! stdout (the CLI) or stderr (the helper, whose stdout may carry an scp or sftp stream);
//! answers come from stdin, one line each.

use crate::client::Conversation;
use std::io::{BufRead, IsTerminal, Write};
use zeroize::Zeroizing;

/// Which program is talking; each keeps the terminal habits its users know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `mfa`: text on stdout; answers also from a pipe (a token secret piped in); echo off
    /// for secret answers on a terminal, and a newline after them.
    Cli,
    /// `mfa-login-prompt`: text on stderr; without a terminal nobody can answer.
    LoginPrompt,
}

/// Shows mfad's text and reads the user's answers.
#[derive(Debug)]
pub struct Terminal {
    style: Style,
    interactive: bool,
}

impl Terminal {
    /// For `mfa`: interactive when stdin is a terminal.
    pub fn for_cli() -> Self {
        Terminal {
            style: Style::Cli,
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// For `mfa-login-prompt`: `interactive` when a person sits at a terminal.
    pub fn for_login_prompt(interactive: bool) -> Self {
        Terminal {
            style: Style::LoginPrompt,
            interactive,
        }
    }

    fn show(&self, text: &str) {
        match self.style {
            Style::Cli => println!("{text}"),
            Style::LoginPrompt => eprintln!("{text}"),
        }
    }

    fn show_prompt(&self, text: &str) {
        let _ = match self.style {
            Style::Cli => {
                print!("{text}");
                std::io::stdout().flush()
            }
            Style::LoginPrompt => {
                eprint!("{text}");
                std::io::stderr().flush()
            }
        };
    }
}

impl Conversation for Terminal {
    fn info(&mut self, text: &str) {
        self.show(text);
    }

    fn error(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn prompt(&mut self, text: &str, echo: bool) -> Option<Zeroizing<String>> {
        let cli = self.style == Style::Cli;
        if !self.interactive && !cli {
            return None;
        }
        self.show_prompt(text);
        let quiet = (cli && !echo && self.interactive)
            .then(EchoOff::new)
            .flatten();
        let answer = read_answer(&mut std::io::stdin().lock());
        drop(quiet);
        if cli && (!self.interactive || !echo) {
            println!();
        }
        answer
    }
}

/// One line of `input` without its line ending; `None` at end of input or on an error.
fn read_answer(input: &mut impl BufRead) -> Option<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let end = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(end);
            Some(line)
        }
    }
}

/// Terminal echo off on stdin until dropped.
struct EchoOff(nix::sys::termios::Termios);

impl EchoOff {
    fn new() -> Option<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let saved = tcgetattr(std::io::stdin()).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(std::io::stdin(), SetArg::TCSANOW, &quiet).ok()?;
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_one_line_without_its_ending() {
        let mut input = std::io::Cursor::new(b"123456\r\nnext\n".to_vec());
        assert_eq!(
            read_answer(&mut input).as_deref().map(|s| s.as_str()),
            Some("123456")
        );
        assert_eq!(
            read_answer(&mut input).as_deref().map(|s| s.as_str()),
            Some("next")
        );
        assert_eq!(read_answer(&mut input), None);
    }

    #[test]
    fn an_empty_line_is_an_answer_and_the_end_of_input_is_none() {
        let mut input = std::io::Cursor::new(b"\n".to_vec());
        assert_eq!(
            read_answer(&mut input).as_deref().map(|s| s.as_str()),
            Some("")
        );
        assert_eq!(read_answer(&mut input), None);
    }

    #[test]
    fn the_login_prompt_asks_nobody_without_a_terminal() {
        let mut t = Terminal::for_login_prompt(false);
        assert_eq!(t.prompt("Passcode: ", true), None);
    }
}
