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
#[serde(deny_unknown_fields)]
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
    deny: Vec<Pattern>,
    admin: bool,
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
                    "{}: role {:?} must be letters, digits, - _ . (at most 64)",
                    at(name.span()),
                    name.get_ref()
                ));
            }
            let globs = |patterns: &[Spanned<String>]| {
                patterns
                    .iter()
                    .map(|p| {
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
            let parsed = Role {
                allow: globs(&role.allow)?,
                deny: globs(&role.deny)?,
                admin: role.admin,
            };
            roles.insert(name.into_inner(), parsed);
        }
        Ok(Policy { roles })
    }

    fn roles_of<'a>(&'a self, caller: &'a Caller) -> impl Iterator<Item = &'a Role> + 'a {
        caller.roles.iter().filter_map(|r| self.roles.get(&**r))
    }

    /// Whether one of the caller's roles allows `normalised` and none denies it.
    fn permits(&self, caller: &Caller, normalised: &str) -> bool {
        let matches = |patterns: &[Pattern]| {
            patterns
                .iter()
                .any(|p| p.matches_with(normalised, GLOB_MATCH))
        };
        self.roles_of(caller).any(|role| matches(&role.allow))
            && !self.roles_of(caller).any(|role| matches(&role.deny))
    }

    fn grants_admin(&self, caller: &Caller) -> bool {
        self.roles_of(caller).any(|role| role.admin)
    }
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

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
        check.reload()?;
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read --policy {}: {e}", path.display()))
        })?;
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
        let normalised = name.normalised();
        if policy.permits(caller, &normalised) {
            return Ok(());
        }
        Err(Error::NotAllowed(format!(
            "procedure {normalised}: no role of this caller allows it (--policy)"
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
        policy.permits(&caller(roles), &name.normalised())
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
