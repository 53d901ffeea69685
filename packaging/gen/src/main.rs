//! mfa-gen: writes the man pages and shell completions that the Debian package installs
//! (scripts/package.sh), from the programs' own clap definitions. Their main.rs files are
//! compiled here as modules, so a flag added to a program reaches its man page, its
//! completions and the help-text check below with no second copy to keep in step.
//!
//! `mfa-gen man DIR`: mfa.1, mfad.8, mfa-login-prompt.8, mfa-web.8 (from clap), pam_mfa.8 and
//! mfad.toml.5 (hand-written, in packaging/man/; mfad.toml.5 gets conf/mfad.toml appended).
//! `mfa-gen completions DIR`: DIR/bash/{mfa,mfad}, DIR/zsh/{_mfa,_mfad},
//! DIR/fish/{mfa,mfad}.fish.

#[allow(dead_code, unused_imports)]
#[path = "../../../mfa/src/main.rs"]
mod mfa_main;

#[allow(dead_code, unused_imports)]
#[path = "../../../mfad/src/main.rs"]
mod mfad_main;

#[allow(dead_code, unused_imports)]
#[path = "../../../mfa-login-prompt/src/main.rs"]
mod prompt_main;

#[allow(dead_code, unused_imports)]
#[path = "../../../mfa-web/src/main.rs"]
mod web_main;

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_complete::Shell;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

const PAM_MFA_8: &str = include_str!("../../man/pam_mfa.8");
const MFAD_TOML_5: &str = include_str!("../../man/mfad.toml.5.in");
const EXAMPLE_CONFIG: &str = include_str!("../../../conf/mfad.toml");

/// The three programs, as their own `--help` sees them. Compiled here, clap would take
/// this crate's name for theirs: each is named as installed.
fn mfa() -> Command {
    mfa_main::Cli::command().name("mfa").bin_name("mfa")
}
fn mfad() -> Command {
    mfad_main::Args::command().name("mfad").bin_name("mfad")
}
fn login_prompt() -> Command {
    prompt_main::Args::command()
        .name("mfa-login-prompt")
        .bin_name("mfa-login-prompt")
}
fn web() -> Command {
    web_main::Args::command()
        .name("mfa-web")
        .bin_name("mfa-web")
}

/// Roff-escapes one line of running text: backslashes, and a leading `.` or `'` that roff
/// would read as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Lines of text as roff paragraphs (a blank line starts a new one).
fn roff_paragraphs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&roff(line.trim_end()));
            out.push('\n');
        }
    }
    out
}

/// How an argument is written in a usage line: `--digits <DIGITS>`, `<USER>`.
fn arg_label(arg: &Arg) -> String {
    let values = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![format!("<{}>", arg.get_id().as_str().to_uppercase())]);
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    let mut label = match (arg.get_short(), arg.get_long()) {
        (Some(c), Some(long)) => format!("-{c}, --{long}"),
        (None, Some(long)) => format!("--{long}"),
        (Some(c), None) => format!("-{c}"),
        (None, None) => return values.join(" "),
    };
    if takes_value {
        label.push(' ');
        label.push_str(&values.join(" "));
    }
    label
}

/// The help of an argument, with its default and possible values as `--help` shows them.
fn arg_help(arg: &Arg) -> String {
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
        help.push_str(&format!(" [default: {}]", defaults.join(",")));
    }
    if let Some(env) = arg.get_env() {
        help.push_str(&format!(" [env: {}]", env.to_string_lossy()));
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
        help.push_str(&format!(" [possible values: {}]", possible.join(", ")));
    }
    help
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// Arguments a command's section lists: its own, not help/version nor the global ones
/// (`--socket`), which the OPTIONS section gives once.
fn own_arguments(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| !is_builtin(a) && !a.is_global_set())
}

/// One `.SS` per command that does something (leaves of the tree), with its arguments.
fn render_commands(cmd: &Command, path: &str, out: &mut String) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            render_commands(sub, &name, out);
            continue;
        }
        let mut usage = name.clone();
        for arg in own_arguments(sub) {
            let label = arg_label(arg);
            if arg.is_required_set() {
                usage.push_str(&format!(" {label}"));
            } else {
                usage.push_str(&format!(" [{label}]"));
            }
        }
        out.push_str(&format!(".SS \"{}\"\n", roff(&usage)));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.push_str(&roff_paragraphs(&about.to_string()));
        }
        for arg in own_arguments(sub) {
            out.push_str(".TP\n");
            out.push_str(&format!("\\fB{}\\fR\n", roff(&arg_label(arg))));
            out.push_str(&roff_paragraphs(&arg_help(arg)));
        }
    }
}

/// A clap page with extra hand-written sections after it.
fn page(cmd: Command, section: &str, extra: &str) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .manual("mfa")
        .source(format!("mfa {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render(&mut out)?;
    out.extend_from_slice(extra.as_bytes());
    Ok(out)
}

/// mfa(1): the top-level page, then every command with its arguments, then the examples.
fn mfa_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = mfa();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("mfa")
        .source(format!("mfa {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut commands = String::from(".SH COMMANDS\n");
    render_commands(&cmd, "mfa", &mut commands);
    out.extend_from_slice(commands.as_bytes());
    if let Some(after) = cmd.get_after_help() {
        out.extend_from_slice(b".SH \"EXAMPLES AND EXIT STATUS\"\n.nf\n");
        for line in after.to_string().lines() {
            out.extend_from_slice(roff(line).as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b".fi\n");
    }
    out.extend_from_slice(
        b".SH FILES\n.TP\n/run/mfa/mfad.sock\nmfad's socket (MFA_SOCKET or \\-\\-socket to change it).\n\
          .SH \"SEE ALSO\"\n\\fBmfad\\fR(8), \\fBpam_mfa\\fR(8), \\fBmfa\\-login\\-prompt\\fR(8), \
          \\fBmfad.toml\\fR(5)\n",
    );
    Ok(out)
}

const MFAD_EXTRA: &str = ".SH FILES\n.TP\n/etc/mfa/mfad.toml\nThe configuration, see \
\\fBmfad.toml\\fR(5).\n.TP\n/etc/mfa/store.key\nThe store key: device secrets are encrypted \
and bypass codes hashed under it. Back it up apart from the database.\n.TP\n\
/var/lib/mfa/mfa.db\nThe SQLite database (enrolments, spent codes, failures, locks).\n.TP\n\
/var/lib/mfa/mfa\\-history.db\nThe login history users see in the portal, kept \
\\fBlogin_history\\fR days.\n.TP\n\
/run/mfa/mfad.sock\nThe socket pam_mfa, mfa and mfa\\-login\\-prompt talk to.\n\
.SH LOGS\nEvery decision goes to syslog, facility authpriv, tag mfad: \\fBjournalctl \\-t \
mfad\\fR, or /var/log/auth.log with rsyslog. See /usr/share/doc/mfa/LOGS.md.\n\
.SH \"SEE ALSO\"\n\\fBmfad.toml\\fR(5), \\fBpam_mfa\\fR(8), \\fBmfa\\fR(1), \
\\fBmfa\\-login\\-prompt\\fR(8), /usr/share/doc/mfa/README.md\n";

const PROMPT_EXTRA: &str = ".SH USAGE\nIn /etc/ssh/sshd_config (or a file in \
sshd_config.d):\n.PP\n.nf\nForceCommand /usr/sbin/mfa\\-login\\-prompt \\-\\-socket \
/run/mfa/mfad.sock \\-\\-failmode secure\n.fi\n.PP\nOn a terminal it shows the menu; without \
one (scp, sftp, rsync, \\fBssh host cmd\\fR) it runs the user's default method and writes \
nothing to standard output. Then it replaces itself with the user's shell or command. See \
/usr/share/doc/mfa/transfer\\-hosts.md.\n.SH \"SEE ALSO\"\n\\fBmfad\\fR(8), \\fBpam_mfa\\fR(8), \
\\fBmfa\\fR(1), \\fBsshd_config\\fR(5)\n";

const WEB_EXTRA: &str = ".SH FILES\n.TP\n/etc/mfa/mfa\\-web.toml\nThe configuration: listen, \
tls_cert, tls_key, socket, connections_per_address, requests_per_minute (documented in the \
file itself and /usr/share/doc/mfa/examples/mfa\\-web.toml).\n.SH SECURITY\nmfa\\-web runs as \
its own system user (mfa\\-web.service), holds no secret and decides nothing: each page view, \
answer or voice callback is one request to mfad over its socket, which mfad honours only \
for the uid of [web] user in mfad.toml.\n.SH \"SEE ALSO\"\n\\fBmfad\\fR(8), \
\\fBmfad.toml\\fR(5), /usr/share/doc/mfa/README.md\n";

/// mfad.toml(5): the hand-written page, then the shipped example verbatim.
fn mfad_toml_page() -> String {
    let mut out = MFAD_TOML_5.to_string();
    out.push_str(
        ".SH \"THE SHIPPED FILE\"\nThe file the package installs as /etc/mfa/mfad.toml, \
                  every key at its default, with its documentation:\n.PP\n.nf\n",
    );
    for line in EXAMPLE_CONFIG.lines() {
        out.push_str(&roff(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
    out
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn man(dir: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    write(&dir.join("mfa.1"), &mfa_page().map_err(io)?)?;
    write(
        &dir.join("mfad.8"),
        &page(mfad(), "8", MFAD_EXTRA).map_err(io)?,
    )?;
    write(
        &dir.join("mfa-login-prompt.8"),
        &page(login_prompt(), "8", PROMPT_EXTRA).map_err(io)?,
    )?;
    write(
        &dir.join("mfa-web.8"),
        &page(web(), "8", WEB_EXTRA).map_err(io)?,
    )?;
    write(&dir.join("pam_mfa.8"), PAM_MFA_8.as_bytes())?;
    write(&dir.join("mfad.toml.5"), mfad_toml_page().as_bytes())
}

fn completions(dir: &Path) -> Result<(), String> {
    for (name, cmd) in [("mfa", mfa()), ("mfad", mfad())] {
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut bytes);
            write(&dir.join(file), &bytes)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [what, dir] if what == "man" => man(Path::new(dir)),
        [what, dir] if what == "completions" => completions(Path::new(dir)),
        _ => {
            eprintln!("usage: mfa-gen man DIR | mfa-gen completions DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfa-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and every command below `cmd` that has no help text.
    fn undescribed(cmd: &Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments().filter(|a| !is_builtin(a)) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path}: argument {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{name}: command without a description"));
            }
            undescribed(sub, &name, out);
        }
    }

    #[test]
    fn every_argument_of_every_command_has_help_text() {
        let mut missing = Vec::new();
        for (name, cmd) in [
            ("mfa", mfa()),
            ("mfad", mfad()),
            ("mfa-login-prompt", login_prompt()),
            ("mfa-web", web()),
        ] {
            let mut cmd = cmd;
            cmd.build();
            undescribed(&cmd, name, &mut missing);
        }
        assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
    }

    #[test]
    fn mfa_help_ends_with_examples() {
        let help = mfa().render_long_help().to_string();
        let examples = help.find("Examples:").expect("no Examples: in mfa --help");
        assert!(
            help[examples..].contains("mfa enroll totp")
                && help[examples..].contains("mfa admin unlock"),
            "{help}"
        );
        // Nothing but the examples and the exit status after them.
        assert!(!help[examples..].contains("Options:"), "{help}");
    }

    #[test]
    fn mfa_man_page_describes_every_argument_of_add_hotp() {
        let page = String::from_utf8(mfa_page().unwrap()).unwrap();
        let section = &page[page
            .find(".SS \"mfa add hotp")
            .expect("no mfa add hotp section")..];
        let section = &section[..section[4..].find(".SS").map_or(section.len(), |i| i + 4)];
        for needle in [
            "\\-\\-name",
            "\\-\\-digits",
            "Digits per code",
            "A name for the device",
        ] {
            assert!(section.contains(needle), "{needle} missing in:\n{section}");
        }
    }

    #[test]
    fn the_config_page_carries_the_shipped_file() {
        let page = mfad_toml_page();
        assert!(page.starts_with(".TH"), "{}", &page[..80]);
        assert!(page.contains("max_failures = 10"));
        // No line of the example may turn into a roff request.
        let example = &page[page.find("THE SHIPPED FILE").unwrap()..];
        for line in example.lines().skip(4) {
            assert!(
                !(line.starts_with('.') || line.starts_with('\'')) || line == ".fi",
                "{line}"
            );
        }
    }
}
