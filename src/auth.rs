//! Bearer-token authentication and who the caller is.
//!
//! Every RPC of ProcedureService needs `authorization: Bearer <token>`
//! matching a configured token; health and reflection stay open so that load
//! balancers and tools can probe. Tokens are compared in constant time, and
//! every configured token is compared, so timing says nothing about which
//! one nearly matched.
//!
//! Tokens come from `--token` (admin tokens: they see every job) and from
//! `--token-file`, one `name:secret` or `name:secret:admin` per line, which is
//! read again on SIGHUP. A token's name becomes the [`Caller`] the handlers
//! see, and the owner of the jobs it submits. No token configured: no check,
//! every caller is an anonymous admin, and the server refuses to listen
//! beyond loopback (see `config`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::{Error, Result};

/// Who is calling, as the interceptor established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; empty without authentication.
    pub name: Arc<str>,
    /// Admins see and manage every job; others only their own.
    pub admin: bool,
}

impl Caller {
    /// The caller when no token is configured.
    pub fn anonymous() -> Caller {
        Caller {
            name: "".into(),
            admin: true,
        }
    }

    /// Whether this caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || *self.name == *owner
    }
}

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
                caller: Caller {
                    name: "admin".into(),
                    admin: true,
                },
            })
            .collect();
        let check = Self {
            inline: Arc::new(inline),
            file: file.map(Path::to_path_buf),
            from_file: Arc::default(),
        };
        check.reload()?;
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

    fn verify(&self, header: Option<&[u8]>) -> Result<Caller> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing token: send the metadata `authorization: Bearer <token>`".into(),
            )
        })?;
        let presented = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization metadata must be `Bearer <token>`".into())
            })?;
        let from_file = self.from_file.read().expect("token lock");
        // Compare with every token, whatever matched, in constant time each.
        let mut found = None;
        for token in self.inline.iter().chain(from_file.iter()) {
            if bool::from(token.secret.as_slice().ct_eq(presented)) && found.is_none() {
                found = Some(token.caller.clone());
            }
        }
        found.ok_or_else(|| Error::Unauthenticated("invalid token".into()))
    }
}

/// `name:secret` or `name:secret:admin` per line; `#` comments and blank
/// lines are ignored. Errors name the line, never the secret.
fn parse_token_file(text: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why} (expected name:secret[:admin])", number + 1);
        let (name, rest) = line.split_once(':').ok_or_else(|| bad("no name"))?;
        let (secret, admin) = match rest.rsplit_once(':') {
            Some((secret, "admin")) => (secret, true),
            _ => (rest, false),
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
        tokens.push(Token {
            secret: secret.as_bytes().to_vec(),
            caller: Caller {
                name: name.into(),
                admin,
            },
        });
    }
    Ok(tokens)
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let caller = self.verify(header)?;
        if let Some(notes) = request
            .extensions()
            .get::<Arc<crate::telemetry::rpc::RpcNotes>>()
        {
            notes.owner(caller.name.clone());
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller a request was authenticated as.
pub fn caller_of<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(inline: &[&str], file: &str) -> TokenCheck {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, file).unwrap();
        let inline: Vec<String> = inline.iter().map(|s| s.to_string()).collect();
        let check = TokenCheck::new(&inline, Some(&path)).unwrap();
        std::mem::forget(dir);
        check
    }

    #[test]
    fn tokens_identify_callers() {
        let check = check(
            &["s3cret-admin"],
            "# team tokens\nalice:alice-secret-1\nops:ops-secret-99:admin\n",
        );
        assert_eq!(
            check
                .verify(Some(b"Bearer alice-secret-1"))
                .unwrap()
                .name
                .as_ref(),
            "alice"
        );
        assert!(!check.verify(Some(b"Bearer alice-secret-1")).unwrap().admin);
        assert!(check.verify(Some(b"Bearer ops-secret-99")).unwrap().admin);
        assert!(check.verify(Some(b"Bearer s3cret-admin")).unwrap().admin);
        for bad in [
            None,
            Some(&b"Bearer wrong-secret"[..]),
            Some(b"alice-secret-1"),
            Some(b"Bearer "),
        ] {
            let err = check.verify(bad).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)));
            assert!(!err.to_string().contains("secret-1"));
        }
    }

    #[test]
    fn without_tokens_everyone_is_an_anonymous_admin() {
        let open = TokenCheck::new(&[], None).unwrap();
        assert!(!open.enabled());
        assert_eq!(open.verify(None).unwrap(), Caller::anonymous());
    }

    #[test]
    fn bad_token_files_name_the_line_not_the_secret() {
        for (text, line) in [
            ("alice", "line 1"),
            ("ok:longenough\n:nameless-secret", "line 2"),
            ("bob:short", "line 1"),
        ] {
            let err = parse_token_file(text).err().unwrap();
            assert!(err.contains(line), "{err}");
            assert!(!err.contains("nameless-secret"), "{err}");
        }
    }

    #[test]
    fn ownership() {
        let alice = Caller {
            name: "alice".into(),
            admin: false,
        };
        assert!(alice.may_see("alice"));
        assert!(!alice.may_see("bob"));
        assert!(Caller::anonymous().may_see("bob"));
    }
}
