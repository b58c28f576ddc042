//! Which procedures this gateway may call: the `--allow` list, and the
//! system schemas that stay closed unless `--allow-system-schemas` opens them.
//!
//! Patterns are globs (`*`, `?`, `[a-z]`) matched case-insensitively against
//! the normalised name (plain parts lower-cased, quoted parts kept), e.g.
//! `--allow 'pkg_etl.*' --allow 'public.report_*'`. No pattern: everything
//! the database user may execute is callable, except the databases' own
//! routines. Those (`pg_catalog.pg_terminate_backend`, `SYS.DBMS_LOCK.SLEEP`)
//! can end sessions, read files or wait forever, so they are refused unless
//! the operator opens them with their own flag; `--allow` is only ever an
//! outer bound and never opens them. A qualified name is refused here, before
//! any round trip; an unqualified one that resolves into a system schema is
//! refused by the backend after its catalog lookup ([`check_resolved`]).

use glob::{MatchOptions, Pattern};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::name::ProcedureName;
use crate::policy::PolicyCheck;

/// How --allow and --policy globs match: case-insensitively, `*` across dots.
pub const GLOB_MATCH: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// The flag that opens the system schemas, as messages name it.
pub const SYSTEM_SCHEMAS_FLAG: &str = "--allow-system-schemas";

/// Schemas of the databases' own routines: PostgreSQL's catalog and
/// information schema, Oracle's SYS.
const SYSTEM_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", "sys"];

/// Oracle's supplied packages, which public synonyms let a caller name
/// without the SYS schema (`DBMS_LOCK.SLEEP`, `UTL_FILE.FOPEN`).
const SYSTEM_PACKAGE_PREFIXES: [&str; 2] = ["dbms_", "utl_"];

#[derive(Clone, Default)]
pub struct AllowList {
    patterns: Vec<Pattern>,
    system_schemas_open: bool,
    /// The per-role rules inside these bounds (`--policy`).
    policy: PolicyCheck,
}

impl AllowList {
    pub fn new(patterns: &[String], system_schemas_open: bool) -> Result<Self> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Pattern::new(p).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "--allow pattern {p:?} is not a valid glob: {e}"
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patterns,
            system_schemas_open,
            policy: PolicyCheck::default(),
        })
    }

    /// These bounds, with the roles of `policy` inside them.
    pub fn with_policy(self, policy: PolicyCheck) -> Self {
        Self { policy, ..self }
    }

    /// PERMISSION_DENIED when the name is in a closed system schema,
    /// matches no pattern (when there are any), or no role of `caller`
    /// allows it (with `--policy`).
    pub fn check(&self, caller: &Caller, name: &ProcedureName) -> Result<()> {
        self.check_bounds(name)?;
        self.policy.check(caller, name)
    }

    /// The outer bounds alone: system schemas and `--allow`.
    fn check_bounds(&self, name: &ProcedureName) -> Result<()> {
        let normalised = name.normalised();
        if !self.system_schemas_open
            && let Some(schema) = system_qualifier(name)
        {
            return Err(system_schema_refused(&normalised, &schema));
        }
        if self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| p.matches_with(&normalised, GLOB_MATCH))
        {
            return Ok(());
        }
        Err(Error::NotAllowed(format!(
            "procedure {normalised} is not in this gateway's allowlist (--allow)"
        )))
    }
}

/// The qualifier of `name` that is a system schema or a supplied package
/// named without its schema, if any.
fn system_qualifier(name: &ProcedureName) -> Option<String> {
    let parts = name.parts();
    let qualifiers = &parts[..parts.len() - 1];
    // schema.object, db.schema.object (PostgreSQL) or schema.package.object
    // (Oracle): any qualifier may be the schema.
    if let Some(schema) = qualifiers.iter().find(|p| is_system_schema(p.as_written())) {
        return Some(schema.as_written().to_string());
    }
    match qualifiers {
        [package] if is_system_package(package.as_written()) => {
            Some(package.as_written().to_string())
        }
        _ => None,
    }
}

/// Whether `schema` holds the database's own routines (case-insensitive:
/// `SYS` on Oracle, `pg_catalog` on PostgreSQL).
pub fn is_system_schema(schema: &str) -> bool {
    SYSTEM_SCHEMAS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(schema))
}

fn is_system_package(package: &str) -> bool {
    SYSTEM_PACKAGE_PREFIXES.iter().any(|prefix| {
        package
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

/// Refuses a routine that a lookup resolved into a system schema, when the
/// schemas are closed. `requested` is the name as the client wrote it.
pub fn check_resolved(open: bool, requested: &ProcedureName, schema: &str) -> Result<()> {
    if open || !is_system_schema(schema) {
        return Ok(());
    }
    Err(resolved_into_system_schema(requested, schema))
}

/// The refusal of a name that resolved into the system schema `schema`.
pub fn resolved_into_system_schema(requested: &ProcedureName, schema: &str) -> Error {
    system_schema_refused(
        &format!(
            "{} (resolved to {schema}.{})",
            requested.normalised(),
            requested.object().folded_lower()
        ),
        schema,
    )
}

fn system_schema_refused(shown: &str, schema: &str) -> Error {
    Error::NotAllowed(format!(
        "procedure {shown} is in the system schema {schema}, which this gateway keeps closed; \
         an operator can open the system schemas with {SYSTEM_SCHEMAS_FLAG} (--allow alone \
         never opens them)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ProcedureName {
        ProcedureName::parse(n).unwrap()
    }

    #[test]
    fn patterns_match_normalised_names() {
        let allow = AllowList::new(&["pkg_etl.*".into(), "public.report_?".into()], false).unwrap();
        let ok = |n: &str| allow.check_bounds(&name(n));
        assert!(ok("PKG_ETL.proceso_largo").is_ok());
        assert!(ok("public.report_1").is_ok());
        assert!(matches!(ok("public.drop_all"), Err(Error::NotAllowed(_))));
        assert!(AllowList::default().check_bounds(&name("x")).is_ok());
        assert!(AllowList::new(&["[".into()], false).is_err());
    }

    #[test]
    fn system_schemas_are_closed_until_their_flag_opens_them() {
        let closed = AllowList::default();
        for refused in [
            "pg_catalog.pg_terminate_backend",
            "PG_CATALOG.pg_sleep",
            "\"pg_catalog\".pg_sleep",
            "information_schema._pg_expandarray",
            "mydb.pg_catalog.pg_sleep",
            "sys.dbms_lock.sleep",
            "SYS.DBMS_LOCK.SLEEP",
            "dbms_lock.sleep",
            "UTL_FILE.FOPEN",
        ] {
            let err = closed.check_bounds(&name(refused)).unwrap_err();
            assert!(matches!(err, Error::NotAllowed(_)), "{refused}");
            let message = err.to_string();
            assert!(message.contains(SYSTEM_SCHEMAS_FLAG), "{message}");
        }
        for fine in [
            "pg_terminate_backend",
            "public.pg_stuff",
            "scott.dbms_x.p",
            "dbms",
        ] {
            assert!(closed.check_bounds(&name(fine)).is_ok(), "{fine}");
        }
        // --allow never opens them, the flag does.
        let broad = AllowList::new(&["*".into()], false).unwrap();
        assert!(broad.check_bounds(&name("pg_catalog.pg_sleep")).is_err());
        let open = AllowList::new(&[], true).unwrap();
        assert!(open.check_bounds(&name("pg_catalog.pg_sleep")).is_ok());
        let bounded = AllowList::new(&["public.*".into()], true).unwrap();
        assert!(bounded.check_bounds(&name("pg_catalog.pg_sleep")).is_err());
    }

    #[test]
    fn resolved_routines_are_checked_too() {
        let requested = name("pg_terminate_backend");
        let err = check_resolved(false, &requested, "pg_catalog").unwrap_err();
        assert!(
            err.to_string()
                .contains("resolved to pg_catalog.pg_terminate_backend"),
            "{err}"
        );
        assert!(check_resolved(true, &requested, "pg_catalog").is_ok());
        assert!(check_resolved(false, &requested, "public").is_ok());
        assert!(check_resolved(false, &name("sleep"), "SYS").is_err());
    }
}
