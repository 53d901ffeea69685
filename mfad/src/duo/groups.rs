//! pam_duo's `groups` option: which users need Duo at all, by their Unix groups.
//!
//! The value is a space-separated list of pattern-lists (`\ ` keeps a space inside a group
//! name); a pattern-list is comma-separated patterns with `*` and `?` wildcards, and a
//! pattern starting with `!` is negated. A user needs Duo when one pattern-list matches:
//! one of the user's groups matches a plain pattern of it and none matches a negated one.

/// One parsed `groups` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPatterns {
    lists: Vec<Vec<Pattern>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    negated: bool,
    glob: String,
}

/// A `groups` value that names no group, or has an empty pattern (`a,,b`, a lone `!`).
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("groups = {value:?} has an empty pattern in {list:?}")]
    EmptyPattern { value: String, list: String },
    #[error("groups is empty; leave it out to require Duo of every user")]
    Empty,
}

impl GroupPatterns {
    /// Parses a `groups` value. Fails on an empty pattern (`a,,b`, a lone `!`).
    pub fn parse(value: &str) -> Result<GroupPatterns, GroupsError> {
        let mut lists = Vec::new();
        for list in split_unescaped_spaces(value) {
            let mut patterns = Vec::new();
            for part in list.split(',') {
                let (negated, glob) = match part.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, part),
                };
                if glob.is_empty() {
                    return Err(GroupsError::EmptyPattern {
                        value: value.into(),
                        list,
                    });
                }
                patterns.push(Pattern {
                    negated,
                    glob: glob.to_string(),
                });
            }
            lists.push(patterns);
        }
        if lists.is_empty() {
            return Err(GroupsError::Empty);
        }
        Ok(GroupPatterns { lists })
    }

    /// Whether a member of `groups` must use Duo.
    pub fn matches(&self, groups: &[String]) -> bool {
        self.lists.iter().any(|list| list_matches(list, groups))
    }

    /// Every pattern is negated: no user can match, so nobody is asked for Duo (pam_duo
    /// warns about this too).
    pub fn all_negated(&self) -> bool {
        self.lists.iter().flatten().all(|p| p.negated)
    }
}

/// OpenSSH's pattern-list rule over a user's groups: a negated match anywhere wins.
fn list_matches(list: &[Pattern], groups: &[String]) -> bool {
    let mut found = false;
    for g in groups {
        for p in list {
            if glob_match(&p.glob, g) {
                if p.negated {
                    return false;
                }
                found = true;
            }
        }
    }
    found
}

/// Splits on spaces, where `\ ` is a space inside a name.
fn split_unescaped_spaces(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `*` matches any run of characters (also none), `?` exactly one; case-sensitive.
fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_match_as_in_openssh() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*admin", "sysadmin"));
        assert!(glob_match("u?ers", "users"));
        assert!(!glob_match("u?ers", "uusers"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("Users", "users"));
    }

    #[test]
    fn the_man_page_example_requires_users_but_not_admins_and_guests() {
        // pam_duo(8): "groups = users,!wheel,!*admin guests"
        let p = GroupPatterns::parse("users,!wheel,!*admin guests").unwrap();
        assert!(p.matches(&g(&["users"])));
        assert!(!p.matches(&g(&["users", "wheel"])));
        assert!(!p.matches(&g(&["users", "netadmin"])));
        assert!(p.matches(&g(&["guests"])));
        assert!(
            p.matches(&g(&["guests", "wheel"])),
            "the second list has no negation"
        );
        assert!(!p.matches(&g(&["staff"])));
        assert!(!p.all_negated());
    }

    #[test]
    fn everyone_but_a_group_and_all_negated_lists() {
        let p = GroupPatterns::parse("*,!wheel").unwrap();
        assert!(p.matches(&g(&["staff"])));
        assert!(!p.matches(&g(&["staff", "wheel"])));
        let none = GroupPatterns::parse("!wheel").unwrap();
        assert!(none.all_negated());
        assert!(!none.matches(&g(&["staff"])));
    }

    #[test]
    fn escaped_spaces_join_a_group_name() {
        let p = GroupPatterns::parse(r"domain\ users admins").unwrap();
        assert!(p.matches(&g(&["domain users"])));
        assert!(p.matches(&g(&["admins"])));
        assert!(!p.matches(&g(&["domain"])));
    }

    #[test]
    fn empty_patterns_are_refused() {
        assert!(GroupPatterns::parse("a,,b").is_err());
        assert!(GroupPatterns::parse("!").is_err());
        assert!(GroupPatterns::parse("   ").is_err());
    }
}
