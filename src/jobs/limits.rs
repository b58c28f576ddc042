//! Per-procedure concurrency limits (`--procedure-limit GLOB=N`): at most N
//! jobs of matching procedures run at once, on this instance in memory mode
//! and across every instance in database mode. A claim passes over a job
//! whose procedure is at a limit and takes the next one, so a busy batch
//! never holds up other procedures' jobs; the job passed over says why it
//! waits. The limits apply to jobs only, never to ExecuteSync.

use glob::{MatchOptions, Pattern};

use crate::error::{Error, Result};

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// One `--procedure-limit`.
#[derive(Debug, Clone)]
pub struct ProcedureLimit {
    /// As written, for messages.
    pub glob: String,
    pattern: Pattern,
    pub max: usize,
}

impl ProcedureLimit {
    /// `GLOB=N`, such as `pkg_etl.carga_*=2`.
    pub fn parse(spec: &str) -> Result<ProcedureLimit> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "--procedure-limit {spec:?} {why}; write GLOB=N, such as 'pkg_etl.carga_*=2'"
            ))
        };
        let (glob, max) = spec.rsplit_once('=').ok_or_else(|| bad("has no ="))?;
        let glob = glob.trim();
        if glob.is_empty() {
            return Err(bad("has no glob"));
        }
        if glob.contains('=') {
            return Err(bad("has more than one ="));
        }
        let max: usize = max
            .trim()
            .parse()
            .map_err(|_| bad("does not end in a whole number"))?;
        if max == 0 {
            return Err(bad("allows no job at all (N is 0)"));
        }
        let pattern = Pattern::new(glob).map_err(|e| bad(&format!("is not a valid glob: {e}")))?;
        Ok(ProcedureLimit {
            glob: glob.to_string(),
            pattern,
            max,
        })
    }

    /// Whether a procedure, named as submitted, falls under this limit:
    /// case ignored, and double quotes too, so that `"pkg_etl".carga` is
    /// held by `pkg_etl.carga*` as `pkg_etl.carga` is.
    pub fn matches(&self, procedure: &str) -> bool {
        self.pattern
            .matches_with(&procedure.replace('"', ""), MATCH)
    }

    /// What a job passed over because of this limit says.
    pub fn waiting_message(&self) -> String {
        format!("waiting: {} limit {}", self.glob, self.max)
    }

    /// The glob as an anchored POSIX regular expression, for PostgreSQL's
    /// case-insensitive `~*`.
    pub fn regex(&self) -> String {
        let mut regex = String::from("^");
        let mut chars = self.glob.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => regex.push_str(".*"),
                '?' => regex.push('.'),
                '[' => {
                    regex.push('[');
                    if chars.peek() == Some(&'!') {
                        chars.next();
                        regex.push('^');
                    }
                    for c in chars.by_ref() {
                        if c == '\\' {
                            regex.push_str("\\\\");
                        } else {
                            regex.push(c);
                        }
                        if c == ']' {
                            break;
                        }
                    }
                }
                c if "\\.^$|()+{}".contains(c) => {
                    regex.push('\\');
                    regex.push(c);
                }
                c => regex.push(c),
            }
        }
        regex.push('$');
        regex
    }
}

/// What a claim must respect besides submission order.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    pub limits: Vec<ProcedureLimit>,
}

impl ClaimRules {
    /// The first limit a job of `procedure` would pass, given how many
    /// claimed jobs each limit counts now (in the order of `limits`).
    pub fn blocking(&self, procedure: &str, counts: &[usize]) -> Option<&ProcedureLimit> {
        self.limits
            .iter()
            .zip(counts)
            .find(|(limit, count)| limit.matches(procedure) && **count >= limit.max)
            .map(|(limit, _)| limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_a_glob_and_a_count_matched_ignoring_case() {
        let limit = ProcedureLimit::parse("pkg_etl.carga_*=2").unwrap();
        assert_eq!((limit.glob.as_str(), limit.max), ("pkg_etl.carga_*", 2));
        assert!(limit.matches("PKG_ETL.CARGA_CLIENTES"));
        assert!(!limit.matches("pkg_etl.limpia"));
        assert!(
            limit.matches("\"pkg_etl\".\"CARGA_x\""),
            "quoting the name does not escape the limit"
        );
        assert_eq!(limit.waiting_message(), "waiting: pkg_etl.carga_* limit 2");
        for bad in ["pkg", "=2", "pkg=0", "pkg=x", "pkg[=2", "pkg.*=2=3"] {
            assert!(ProcedureLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_regex_matches_what_the_glob_matches() {
        let regex = |glob: &str| ProcedureLimit::parse(&format!("{glob}=1")).unwrap().regex();
        assert_eq!(regex("pkg_etl.carga_*"), r"^pkg_etl\.carga_.*$");
        assert_eq!(regex("a?b[!x]c[a-z]"), "^a.b[^x]c[a-z]$");
        assert_eq!(regex("p(1)+$"), r"^p\(1\)\+\$$");
    }

    #[test]
    fn a_job_must_fit_every_limit_it_matches() {
        let limits = ["pkg.*=3", "pkg.load_*=1"].map(|s| ProcedureLimit::parse(s).unwrap());
        let rules = ClaimRules {
            limits: limits.into(),
        };
        assert!(rules.blocking("pkg.load_a", &[1, 0]).is_none());
        let blocked = rules.blocking("pkg.load_a", &[1, 1]).unwrap();
        assert_eq!(blocked.glob, "pkg.load_*");
        assert!(rules.blocking("pkg.report", &[2, 1]).is_none());
        assert!(rules.blocking("other.p", &[9, 9]).is_none());
    }
}
