//! Named bearer tokens: `--token` (admins, named and with the role `admin`)
//! and `--token-file`.
//!
//! The file holds one `name:secret` per line, optionally followed by
//! `:role1,role2` (the role `admin` marks an admin, who sees every job), and
//! is read again on SIGHUP; an unreadable or bad file keeps the previous
//! tokens. Tokens are compared in constant time, and every configured token
//! is compared, so timing says nothing about which one nearly matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

use super::{Caller, Roles};
use crate::error::{Error, Result};

#[derive(Clone)]
struct Token {
    secret: Vec<u8>,
    caller: Caller,
}

/// The configured tokens; cheap to clone, shared with the SIGHUP reloader.
#[derive(Clone)]
pub struct TokenCheck {
    inline: Arc<Vec<Token>>,
    file: Option<PathBuf>,
    from_file: Arc<RwLock<Vec<Token>>>,
}

impl TokenCheck {
    /// `inline` admin tokens and, when given, the token file (read now).
    pub fn new(inline: &[String], file: Option<&Path>) -> Result<Self> {
        let inline = inline
            .iter()
            .map(|secret| Token {
                secret: secret.as_bytes().to_vec(),
                // The role `admin`, as a token file's admins have, which a
                // policy may grant calls to.
                caller: Caller {
                    name: "admin".into(),
                    admin: true,
                    roles: Arc::from([Arc::from("admin")]),
                },
            })
            .collect();
        let check = Self {
            inline: Arc::new(inline),
            file: file.map(Path::to_path_buf),
            from_file: Arc::default(),
        };
        let named = check.reload()?;
        if let Some(file) = file {
            tracing::info!(tokens = named, file = %file.display(), "named tokens loaded");
        }
        if !check.inline.is_empty() {
            tracing::info!(
                tokens = check.inline.len(),
                "--token admin tokens configured"
            );
        }
        Ok(check)
    }

    /// Whether any token is configured (and so authentication is on).
    pub fn enabled(&self) -> bool {
        self.file.is_some() || !self.inline.is_empty()
    }

    /// Reads the token file again; on error the previous tokens stay.
    pub fn reload(&self) -> Result<usize> {
        let Some(path) = &self.file else { return Ok(0) };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read --token-file {}: {e}", path.display()))
        })?;
        let tokens = parse_token_file(&text)
            .map_err(|e| Error::InvalidArgument(format!("--token-file {}: {e}", path.display())))?;
        let count = tokens.len();
        *self.from_file.write().expect("token lock") = tokens;
        Ok(count)
    }

    /// The roles the tokens give `name` now (none if it has no token).
    pub fn roles_of(&self, name: &str) -> Option<Roles> {
        let from_file = self.from_file.read().expect("token lock");
        self.inline
            .iter()
            .chain(from_file.iter())
            .find(|t| &*t.caller.name == name)
            .map(|t| t.caller.roles.clone())
    }

    /// The caller whose token `presented` is, if any.
    pub fn find(&self, presented: &[u8]) -> Option<Caller> {
        let from_file = self.from_file.read().expect("token lock");
        // Compare with every token, whatever matched, in constant time each.
        let mut found = None;
        for token in self.inline.iter().chain(from_file.iter()) {
            if bool::from(token.secret.as_slice().ct_eq(presented)) && found.is_none() {
                found = Some(token.caller.clone());
            }
        }
        found
    }
}

/// `name:secret` or `name:secret:role1,role2` per line (`admin` among the
/// roles marks an admin); `#` comments and blank lines are ignored. Errors
/// name the line, never the secret.
fn parse_token_file(text: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    // The line of each token, for errors that name two.
    let mut lines_of = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            format!(
                "line {}: {why} (expected name:secret or name:secret:role1,role2)",
                number + 1
            )
        };
        let (name, rest) = line.split_once(':').ok_or_else(|| bad("no name"))?;
        // A secret may hold colons when roles follow the last one; roles
        // never hold them. A last field that is not a role list is refused
        // rather than read as part of the secret.
        let (secret, roles) = match rest.rsplit_once(':') {
            Some((secret, roles)) if !roles.is_empty() && roles.split(',').all(is_role_name) => {
                (secret, roles.split(',').map(Arc::from).collect())
            }
            Some(_) => {
                return Err(bad(
                    "the roles after the last `:` must be role names (ASCII letters, digits, - _ ., \
                     at most 64) separated by commas, without spaces",
                ));
            }
            None => (rest, Vec::new()),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(bad("the name must be letters, digits, - _ . @"));
        }
        if secret.len() < 8 {
            return Err(bad("the secret must have at least 8 characters"));
        }
        if let Some(earlier) = tokens
            .iter()
            .position(|t: &Token| t.secret == secret.as_bytes())
        {
            return Err(bad(&format!(
                "its secret is that of the token on line {}: each token needs its own",
                lines_of[earlier]
            )));
        }
        let admin = roles.iter().any(|r: &Arc<str>| &**r == "admin");
        lines_of.push(number + 1);
        tokens.push(Token {
            secret: secret.as_bytes().to_vec(),
            caller: Caller {
                name: name.into(),
                admin,
                roles: roles.into(),
            },
        });
    }
    Ok(tokens)
}

/// A role as a token file or a policy names it: letters, digits, - _ .
/// (no `:` or `,`, which separate the fields), at most 64 characters.
pub fn is_role_name(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(inline: &[&str], file: &str) -> TokenCheck {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, file).unwrap();
        let inline: Vec<String> = inline.iter().map(|s| s.to_string()).collect();
        TokenCheck::new(&inline, Some(&path)).unwrap()
    }

    #[test]
    fn tokens_identify_callers_and_their_roles() {
        let check = check(
            &["s3cret-admin"],
            "# team tokens\nalice:alice-secret-1\nops:ops-secret-99:admin\n\
             etl:etl-secret-77:etl,reports\ncolon:has:a-colon-secret:etl\n",
        );
        let alice = check.find(b"alice-secret-1").unwrap();
        assert_eq!(&*alice.name, "alice");
        assert!(!alice.admin);
        assert!(alice.roles.is_empty());
        assert!(check.find(b"ops-secret-99").unwrap().admin);
        assert!(check.find(b"s3cret-admin").unwrap().admin);
        let etl = check.find(b"etl-secret-77").unwrap();
        assert!(!etl.admin);
        assert_eq!(
            etl.roles.iter().map(|r| &**r).collect::<Vec<_>>(),
            ["etl", "reports"]
        );
        assert_eq!(&*check.find(b"has:a-colon-secret").unwrap().name, "colon");
        for bad in [
            &b"wrong-secret"[..],
            b"",
            b"alice-secret-",
            b"etl-secret-77:etl",
        ] {
            assert!(check.find(bad).is_none());
        }
    }

    #[test]
    fn bad_token_files_name_the_line_not_the_secret() {
        for (text, line) in [
            ("alice", "line 1"),
            ("ok:longenough\n:nameless-secret", "line 2"),
            ("bob:short", "line 1"),
            ("bob:short:etl", "line 1"),
            (
                "tom:tom-secret-1234:etl, reports",
                "line 1: the roles after the last `:`",
            ),
            (
                "tom:tom-secret-1234:",
                "line 1: the roles after the last `:`",
            ),
            (
                "tom:tom-secret-1234:etl,,reports",
                "line 1: the roles after the last `:`",
            ),
            (
                "tom:tom-secret-1234:ñandú",
                "line 1: the roles after the last `:`",
            ),
            (
                "a:same-secret-1:etl\n\nb:same-secret-1:admin",
                "line 3: its secret is that of the token on line 1",
            ),
        ] {
            let err = parse_token_file(text).err().unwrap();
            assert!(err.contains(line), "{err}");
            assert!(!err.contains("nameless-secret"), "{err}");
            assert!(!err.contains("secret-1"), "{err}");
        }
    }

    #[test]
    fn role_names() {
        for good in ["etl", "pkg.reports", "team-a_1"] {
            assert!(is_role_name(good), "{good}");
        }
        for bad in ["", "a b", "a,b", "a:b", "ñ", &"r".repeat(65)] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }
}
