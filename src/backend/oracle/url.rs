//! `oracle://` URLs → user, password and connect string.
//!
//! Accepted forms:
//! - `oracle://user:password@host:1521/service_name` (EZConnect: the connect
//!   string becomes `//host:1521/service_name`);
//! - `oracle://user:password@tns_alias` (the alias is looked up in
//!   tnsnames.ora through `TNS_ADMIN`, as any Oracle client does);
//! - either without the password, which then comes from
//!   `PROCGATE_DB_PASSWORD` or the file named by `PROCGATE_DB_PASSWORD_FILE`
//!   (so that it stays out of process listings and shell history).
//!
//! User and password may be percent-encoded (`p%40ss` for `p@ss`). The
//! password is kept out of every message.

use std::fmt;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// Where a password may come from besides the URL.
pub const PASSWORD_ENV: &str = "PROCGATE_DB_PASSWORD";
pub const PASSWORD_FILE_ENV: &str = "PROCGATE_DB_PASSWORD_FILE";

#[derive(Clone, PartialEq, Eq)]
pub struct OracleTarget {
    pub user: String,
    pub password: String,
    pub connect_string: String,
}

/// Never prints the password.
impl fmt::Debug for OracleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OracleTarget")
            .field("user", &self.user)
            .field("password", &"***")
            .field("connect_string", &self.connect_string)
            .finish()
    }
}

/// Parses the URL; `env` reads environment variables (injected for tests).
pub fn parse(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<OracleTarget> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "invalid Oracle URL {}: {why}; expected oracle://user:password@host:port/service_name \
             or oracle://user@tns_alias",
            crate::backend::redact_url(url)
        ))
    };
    let rest = url
        .strip_prefix("oracle://")
        .ok_or_else(|| bad("it must start with oracle://"))?;
    let (userinfo, location) = rest
        .rsplit_once('@')
        .ok_or_else(|| bad("the user is missing"))?;
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (
            user,
            Some(decode(password).map_err(|_| bad("bad encoding"))?),
        ),
        None => (userinfo, None),
    };
    let user = decode(user).map_err(|_| bad("bad encoding"))?;
    if user.is_empty() {
        return Err(bad("the user is missing"));
    }
    if location.is_empty() {
        return Err(bad("the host or TNS alias is missing"));
    }
    let connect_string = if location.contains('/') {
        format!("//{location}")
    } else {
        location.to_string()
    };
    let password = match password {
        Some(p) => p,
        None => password_from_env(&env)?,
    };
    Ok(OracleTarget {
        user,
        password,
        connect_string,
    })
}

fn decode(text: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
}

fn password_from_env(env: &impl Fn(&str) -> Option<String>) -> Result<String> {
    if let Some(password) = env(PASSWORD_ENV) {
        return Ok(password);
    }
    if let Some(path) = env(PASSWORD_FILE_ENV) {
        let content = std::fs::read_to_string(&path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the database password from {PASSWORD_FILE_ENV}={path}: {e}"
            ))
        })?;
        return Ok(content.trim_end_matches(['\n', '\r']).to_string());
    }
    Err(Error::InvalidArgument(format!(
        "the Oracle URL has no password: put it in the URL, in {PASSWORD_ENV}, \
         or in a file named by {PASSWORD_FILE_ENV}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn ezconnect_urls() {
        let t = parse("oracle://scott:tiger@db.example:1521/ORCLPDB1", no_env).unwrap();
        assert_eq!(t.user, "scott");
        assert_eq!(t.password, "tiger");
        assert_eq!(t.connect_string, "//db.example:1521/ORCLPDB1");
        let t = parse("oracle://app:p%40ss%2Fw@host/svc", no_env).unwrap();
        assert_eq!(t.password, "p@ss/w");
        assert_eq!(t.connect_string, "//host/svc");
    }

    #[test]
    fn tns_aliases_and_passwords_from_the_environment() {
        let env = |name: &str| (name == PASSWORD_ENV).then(|| "from-env".to_string());
        let t = parse("oracle://batch@PROD_ETL", env).unwrap();
        assert_eq!(t.connect_string, "PROD_ETL");
        assert_eq!(t.password, "from-env");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let env = move |name: &str| (name == PASSWORD_FILE_ENV).then(|| path.clone());
        assert_eq!(
            parse("oracle://batch@PROD_ETL", env).unwrap().password,
            "from-file"
        );
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        for url in [
            "postgres://a:b@c/d",
            "oracle://host/svc",
            "oracle://:pw@host/svc",
            "oracle://u:pw@",
            "oracle://u@alias",
        ] {
            let err = parse(url, no_env).unwrap_err().to_string();
            assert!(
                err.contains("Oracle URL") || err.contains("no password"),
                "{err}"
            );
            assert!(!err.contains("pw@"), "{err}");
        }
        let t = parse("oracle://u:secret@h/s", no_env).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }
}
