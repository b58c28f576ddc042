//! Which caller may call which procedure: the roles of `--policy FILE`.
//!
//! ```toml
//! [roles.etl]
//! allow = ["pkg_etl.*"]            # globs, as --allow
//! [roles.reports]
//! allow = ["pkg_rep.reporte_*", "public.report_*"]
//! deny  = ["pkg_rep.reporte_nomina"]
//! [roles.ops]
//! admin = true                     # sees and cancels every job and schedule
//! ```
//!
//! A caller may call a procedure when one of its roles allows it and none
//! denies it; `--allow` and the closed system schemas stay the outer bound
//! for everyone (see `allow`), and the policy never reopens them. The
//! decision is made on the parsed name, before any round trip. The file is
//! read again on SIGHUP; a bad one is refused with its line and reason, and
//! the previous policy stays. A refusal names the procedure and says that
//! no role of the caller allows it, and never lists the policy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use glob::Pattern;
use serde::Deserialize;
use toml::Spanned;
use tracing::{info, warn};

use crate::allow::GLOB_MATCH;
use crate::auth::Caller;
use crate::auth::tokens::is_role_name;
use crate::error::{Error, Result};
use crate::name::ProcedureName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, RoleFile>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a role: a table with allow, deny and admin"
)]
struct RoleFile {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    admin: bool,
}

#[derive(Debug, Default)]
struct Role {
    allow: Vec<Pattern>,
    deny: Vec<Deny>,
    admin: bool,
}

/// A deny glob, with what it denies of names written with fewer
/// qualifiers: `pkg_rep.reporte_nomina` also denies `reporte_nomina`, and
/// the name the caller wrote with more (`db.pkg_rep.reporte_nomina`, a
/// PostgreSQL database or an Oracle schema in front) is matched by its
/// tails. A deny then holds however the procedure is named; an allow
/// matches only the name as written, so that it never grants more.
#[derive(Debug)]
struct Deny {
    whole: Pattern,
    /// The glob without its leading dot-separated parts, shortest last.
    tails: Vec<Pattern>,
}

impl Deny {
    fn new(glob: &str) -> std::result::Result<Deny, glob::PatternError> {
        let tails = glob
            .match_indices('.')
            .filter_map(|(at, _)| Pattern::new(&glob[at + 1..]).ok())
            .collect();
        Ok(Deny {
            whole: Pattern::new(glob)?,
            tails,
        })
    }

    /// Whether it denies the name whose normalised parts are `parts`.
    fn denies(&self, parts: &[String]) -> bool {
        let matches = |p: &Pattern, text: &str| p.matches_with(text, GLOB_MATCH);
        let whole = parts.join(".");
        // As written, less qualified than the glob, or more.
        matches(&self.whole, &whole)
            || self.tails.iter().any(|tail| matches(tail, &whole))
            || (1..parts.len()).any(|skip| matches(&self.whole, &parts[skip..].join(".")))
    }
}

/// A parsed policy.
#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<String, Role>,
}

impl Policy {
    /// Parses a policy file's text; errors name the line and the reason.
    pub fn parse(text: &str) -> std::result::Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            let reason = e.message().trim_end().to_string();
            match line {
                Some(line) => format!("line {line}: {reason}"),
                None => reason,
            }
        })?;
        let mut roles = HashMap::new();
        for (name, role) in file.roles {
            let at = |span: std::ops::Range<usize>| format!("line {}", line_of(text, span.start));
            if !is_role_name(name.get_ref()) {
                return Err(format!(
                    "{}: role {:?} must be ASCII letters, digits, - _ . (at most 64)",
                    at(name.span()),
                    name.get_ref()
                ));
            }
            let globs = |patterns: &[Spanned<String>]| {
                patterns
                    .iter()
                    .map(|p| {
                        if p.get_ref().is_empty() {
                            return Err(format!("{}: an empty glob matches nothing", at(p.span())));
                        }
                        Pattern::new(p.get_ref()).map_err(|e| {
                            format!(
                                "{}: {:?} is not a valid glob: {e}",
                                at(p.span()),
                                p.get_ref()
                            )
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()
            };
            let denies = globs(&role.deny)?
                .iter()
                .map(|p| Deny::new(p.as_str()).expect("a glob that parsed"))
                .collect();
            let parsed = Role {
                allow: globs(&role.allow)?,
                deny: denies,
                admin: role.admin,
            };
            roles.insert(name.into_inner(), parsed);
        }
        Ok(Policy { roles })
    }

    fn roles_of<'a>(&'a self, caller: &'a Caller) -> impl Iterator<Item = &'a Role> + 'a {
        caller.roles.iter().filter_map(|r| self.roles.get(&**r))
    }

    /// Whether one of the caller's roles allows `name` and none denies it.
    fn permits(&self, caller: &Caller, name: &ProcedureName) -> bool {
        let normalised = name.normalised();
        let parts: Vec<String> = name.parts().iter().map(|p| p.folded_lower()).collect();
        let allowed = |role: &Role| {
            role.allow
                .iter()
                .any(|p| p.matches_with(&normalised, GLOB_MATCH))
        };
        let denied = |role: &Role| role.deny.iter().any(|d| d.denies(&parts));
        self.roles_of(caller).any(allowed) && !self.roles_of(caller).any(denied)
    }

    fn grants_admin(&self, caller: &Caller) -> bool {
        self.roles_of(caller).any(|role| role.admin)
    }
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The largest policy file read: far more than any real one.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// The policy in force, shared with the SIGHUP reloader; none configured
/// means no per-role rule (only `--allow`).
#[derive(Clone, Default)]
pub struct PolicyCheck {
    file: Option<PathBuf>,
    current: Arc<RwLock<Option<Arc<Policy>>>>,
}

impl PolicyCheck {
    /// The policy of `file`, read now (a bad file stops the start).
    pub fn new(file: Option<&Path>) -> Result<Self> {
        let check = Self {
            file: file.map(Path::to_path_buf),
            current: Arc::default(),
        };
        let roles = check.reload()?;
        if let Some(file) = file {
            info!(roles, file = %file.display(), "policy loaded");
            if roles == 0 {
                warn!("the policy defines no role: every call is refused (--policy)");
            }
        }
        Ok(check)
    }

    /// Whether a policy is configured.
    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the file again; on error the previous policy stays. Returns
    /// how many roles it defines.
    pub fn reload(&self) -> Result<usize> {
        let Some(path) = &self.file else { return Ok(0) };
        let unreadable = |e: std::io::Error| {
            Error::InvalidArgument(format!("cannot read --policy {}: {e}", path.display()))
        };
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size > MAX_POLICY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "--policy {}: {size} bytes is more than the {MAX_POLICY_BYTES} a policy may have",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let policy = Policy::parse(&text)
            .map_err(|e| Error::InvalidArgument(format!("--policy {}: {e}", path.display())))?;
        let roles = policy.roles.len();
        *self.current.write().expect("policy lock") = Some(Arc::new(policy));
        Ok(roles)
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.current.read().expect("policy lock").clone()
    }

    /// PERMISSION_DENIED unless one of the caller's roles allows `name`.
    pub fn check(&self, caller: &Caller, name: &ProcedureName) -> Result<()> {
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        if policy.permits(caller, name) {
            return Ok(());
        }
        Err(Error::NotAllowed(format!(
            "procedure {}: no role of this caller allows it (--policy)",
            name.normalised()
        )))
    }

    /// Whether the policy makes this caller an admin.
    pub fn grants_admin(&self, caller: &Caller) -> bool {
        self.policy().is_some_and(|p| p.grants_admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[roles.etl]
allow = ["pkg_etl.*"]
[roles.reports]
allow = ["pkg_rep.reporte_*", "public.report_*"]
deny  = ["pkg_rep.reporte_nomina"]
[roles.ops]
admin = true
"#;

    fn caller(roles: &[&str]) -> Caller {
        Caller {
            name: "someone".into(),
            admin: false,
            roles: roles.iter().map(|r| Arc::from(*r)).collect(),
        }
    }

    fn permits(policy: &Policy, roles: &[&str], name: &str) -> bool {
        let name = ProcedureName::parse(name).unwrap();
        policy.permits(&caller(roles), &name)
    }

    #[test]
    fn a_role_allows_and_none_denies() {
        let policy = Policy::parse(EXAMPLE).unwrap();
        assert!(permits(&policy, &["etl"], "pkg_etl.cargar"));
        assert!(permits(&policy, &["etl"], "PKG_ETL.Cargar"));
        assert!(!permits(&policy, &["etl"], "pkg_rep.reporte_ventas"));
        assert!(permits(&policy, &["reports"], "pkg_rep.reporte_ventas"));
        assert!(!permits(&policy, &["reports"], "pkg_rep.reporte_nomina"));
        // A deny of any role wins over another role's allow.
        assert!(!permits(
            &policy,
            &["etl", "reports"],
            "pkg_rep.reporte_nomina"
        ));
        assert!(permits(&policy, &["etl", "reports"], "pkg_etl.cargar"));
        assert!(!permits(&policy, &[], "pkg_etl.cargar"));
        assert!(!permits(&policy, &["unknown"], "pkg_etl.cargar"));
        assert!(
            !permits(&policy, &["ops"], "pkg_etl.cargar"),
            "admin is not a call grant"
        );
        assert!(policy.grants_admin(&caller(&["reports", "ops"])));
        assert!(!policy.grants_admin(&caller(&["reports"])));
    }

    #[test]
    fn a_deny_holds_however_the_procedure_is_named() {
        let policy = Policy::parse(
            r#"
[roles.wide]
allow = ["*"]
deny = ["pkg_rep.reporte_nomina", "public.report_?", "app.pkg_x.secret"]
"#,
        )
        .unwrap();
        let wide = |name: &str| permits(&policy, &["wide"], name);
        for walked_around in [
            "pkg_rep.reporte_nomina",
            "postgres.pkg_rep.reporte_nomina",
            "\"postgres\".pkg_rep.reporte_nomina",
            "POSTGRES.PKG_REP.REPORTE_NOMINA",
            "reporte_nomina",
            "report_x",
            "public.report_x",
            "pkg_x.secret",
            "secret",
        ] {
            assert!(!wide(walked_around), "{walked_around}");
        }
        for other in [
            "other.reporte_nomina",
            "pkg_rep.reporte_ventas",
            "public.report_xy",
            "other.pkg_x.secret",
        ] {
            assert!(wide(other), "{other}");
        }
    }

    #[test]
    fn bad_files_name_the_line_and_the_reason() {
        for (text, says) in [
            ("[roles.etl]\nallow = \"pkg_etl.*\"\n", "line 2"),
            ("[roles.etl]\nalow = [\"x\"]\n", "unknown field `alow`"),
            (
                "[roles.etl]\nallow = [\"pkg_etl.*\",\n  \"[bad\"]\n",
                "line 3: \"[bad\" is not a valid glob",
            ),
            (
                "[roles.\"bad role\"]\nallow = []\n",
                "line 1: role \"bad role\"",
            ),
            ("[roles.etl\n", "line 1"),
            ("admins = 1\n", "unknown field `admins`"),
            (
                "[roles]\netl = 5\n",
                "line 2: invalid type: integer `5`, expected a role: a table",
            ),
            (
                "[roles.etl]\nallow = [\"\"]\n",
                "line 2: an empty glob matches nothing",
            ),
        ] {
            let err = Policy::parse(text).unwrap_err();
            assert!(err.contains(says), "{says:?} not in {err:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_procedure_not_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let check = PolicyCheck::new(Some(&path)).unwrap();
        let name = ProcedureName::parse("pkg_rep.reporte_nomina").unwrap();
        let err = check.check(&caller(&["reports"]), &name).unwrap_err();
        assert!(matches!(err, Error::NotAllowed(_)));
        let message = err.to_string();
        assert!(message.contains("pkg_rep.reporte_nomina"), "{message}");
        assert!(
            message.contains("no role of this caller allows it"),
            "{message}"
        );
        assert!(
            !message.contains("reports") && !message.contains("deny"),
            "{message}"
        );
        // A bad file on reload keeps the policy there was.
        std::fs::write(&path, "[roles.etl\n").unwrap();
        assert!(check.reload().is_err());
        assert!(
            check
                .check(
                    &caller(&["etl"]),
                    &ProcedureName::parse("pkg_etl.x").unwrap()
                )
                .is_ok()
        );
        assert!(PolicyCheck::default().check(&caller(&[]), &name).is_ok());
    }
}
