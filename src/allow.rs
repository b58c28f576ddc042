//! The allowlist: which procedures this gateway may call (`--allow`).
//!
//! Patterns are globs (`*`, `?`, `[a-z]`) matched case-insensitively against
//! the normalised name (plain parts lower-cased, quoted parts kept), e.g.
//! `--allow 'pkg_etl.*' --allow 'public.report_*'`. No pattern: everything
//! the database user may execute is callable.

use glob::{MatchOptions, Pattern};

use crate::error::{Error, Result};
use crate::name::ProcedureName;

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

impl AllowList {
    pub fn new(patterns: &[String]) -> Result<Self> {
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
        Ok(Self { patterns })
    }

    /// PERMISSION_DENIED unless the name matches a pattern (or there are none).
    pub fn check(&self, name: &ProcedureName) -> Result<()> {
        let normalised = name.normalised();
        if self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| p.matches_with(&normalised, MATCH))
        {
            return Ok(());
        }
        Err(Error::NotAllowed(format!(
            "procedure {normalised} is not in this gateway's allowlist (--allow)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_normalised_names() {
        let allow = AllowList::new(&["pkg_etl.*".into(), "public.report_?".into()]).unwrap();
        let ok = |n: &str| allow.check(&ProcedureName::parse(n).unwrap());
        assert!(ok("PKG_ETL.proceso_largo").is_ok());
        assert!(ok("public.report_1").is_ok());
        assert!(matches!(ok("public.drop_all"), Err(Error::NotAllowed(_))));
        assert!(
            AllowList::default()
                .check(&ProcedureName::parse("x").unwrap())
                .is_ok()
        );
        assert!(AllowList::new(&["[".into()]).is_err());
    }
}
