//! Procedure signatures from `pg_proc`, cached briefly.
//!
//! A call needs the signature: to check parameter names and directions before
//! anything runs, to cast text-bound values to the declared types, to know
//! whether to `CALL` or `SELECT`, and to type untyped values. Lookups are
//! cached per name for a few seconds so that a hot procedure costs one
//! round-trip per call, while a redefinition is picked up quickly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::backend::postgres::errors::classify;
use crate::call::Direction;
use crate::error::{Error, Result};
use crate::name::ProcedureName;

/// One routine (an overload) of a name.
#[derive(Debug, Clone, PartialEq)]
pub struct Routine {
    pub schema: String,
    pub name: String,
    /// Its input argument types, `integer, text`: with the name, its
    /// overload id.
    pub arg_types: String,
    pub is_procedure: bool,
    pub returns_set: bool,
    pub return_type: PgType,
    pub args: Vec<Arg>,
}

impl Routine {
    pub fn qualified_name(&self) -> String {
        self.to_string()
    }

    /// Its overload id: its signature, `public.twice(integer)`.
    pub fn identity(&self) -> String {
        format!("{self}({})", self.arg_types)
    }
}

/// `schema.name`, for messages.
impl std::fmt::Display for Routine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Empty for an unnamed argument.
    pub name: String,
    pub mode: ArgMode,
    pub pg_type: PgType,
    pub has_default: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgMode {
    In,
    Out,
    InOut,
    Variadic,
    /// A column of RETURNS TABLE.
    Table,
}

impl ArgMode {
    fn from_code(code: &str) -> ArgMode {
        match code {
            "o" => ArgMode::Out,
            "b" => ArgMode::InOut,
            "v" => ArgMode::Variadic,
            "t" => ArgMode::Table,
            _ => ArgMode::In,
        }
    }

    pub fn takes_value(self) -> bool {
        matches!(self, ArgMode::In | ArgMode::InOut | ArgMode::Variadic)
    }

    pub fn direction(self) -> Direction {
        match self {
            ArgMode::In | ArgMode::Variadic => Direction::In,
            ArgMode::Out | ArgMode::Table => Direction::Out,
            ArgMode::InOut => Direction::InOut,
        }
    }
}

/// A type as the catalog names it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgType {
    /// `pg_type.typname` of the type (of the base type for a domain): `int4`.
    pub base: String,
    /// `format_type()`, usable in a cast: `integer`, `public.mood`.
    pub sql: String,
    /// `pg_type.typcategory` of the base type: `A` array, `C` composite…
    pub category: char,
}

impl PgType {
    /// An array or composite type: its values travel as JSON.
    pub fn is_structured(&self) -> bool {
        matches!(self.category, 'A' | 'C')
    }
}

/// What a routine's row holds: see `routine_of`.
macro_rules! routine_columns {
    () => {
        "n.nspname::text, p.proname::text, p.prokind = 'p', p.proretset,
       format_type(p.prorettype, NULL),
       coalesce(p.proargnames, ARRAY[]::text[]),
       coalesce(p.proargmodes::text[], ARRAY[]::text[]),
       ARRAY(SELECT (SELECT typname FROM pg_type WHERE oid = coalesce(nullif(t.typbasetype, 0), t.oid))::text
               FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY a(oid, i)
               JOIN pg_type t ON t.oid = a.oid ORDER BY a.i),
       ARRAY(SELECT format_type(a.oid, NULL)
               FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY a(oid, i)
               ORDER BY a.i),
       p.pronargdefaults::int4,
       (SELECT typname FROM pg_type WHERE oid = coalesce(nullif(rt.typbasetype, 0), rt.oid))::text,
       ARRAY(SELECT (SELECT typcategory FROM pg_type WHERE oid = coalesce(nullif(t.typbasetype, 0), t.oid))::text
               FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY a(oid, i)
               JOIN pg_type t ON t.oid = a.oid ORDER BY a.i),
       (SELECT typcategory FROM pg_type WHERE oid = coalesce(nullif(rt.typbasetype, 0), rt.oid))::text,
       oidvectortypes(p.proargtypes)"
    };
}

const LOOKUP: &str = concat!(
    "SELECT ",
    routine_columns!(),
    "
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type rt ON rt.oid = p.prorettype
 WHERE p.proname = $1
   AND p.prokind IN ('f', 'p')
   AND CASE WHEN $2::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = $2 END
   AND ($3::text IS NULL OR $3 = current_database())
 ORDER BY p.oid"
);

/// A page of the routines the user may execute, after (schema, name, oid),
/// with the argument types of every overload of each one's name (by oid,
/// as a lookup orders them). System schemas only when $2; routines of extensions are left out
/// (they are the extension's, not the application's).
const LIST: &str = concat!(
    "SELECT ",
    routine_columns!(),
    ",
       p.oid::int8,
       ARRAY(SELECT oidvectortypes(o.proargtypes) FROM pg_proc o
              WHERE o.pronamespace = p.pronamespace AND o.proname = p.proname
                AND o.prokind IN ('f', 'p')
              ORDER BY o.oid)
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type rt ON rt.oid = p.prorettype
 WHERE p.prokind IN ('f', 'p')
   AND ($1::text IS NULL OR n.nspname = $1)
   AND ($2::bool OR (n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'))
   AND has_function_privilege(p.oid, 'EXECUTE')
   AND has_schema_privilege(n.oid, 'USAGE')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
   AND (n.nspname::text COLLATE \"C\", p.proname::text COLLATE \"C\", p.oid::int8)
       > ($3::text COLLATE \"C\", $4::text COLLATE \"C\", $5::int8)
 ORDER BY n.nspname::text COLLATE \"C\", p.proname::text COLLATE \"C\", p.oid::int8
 LIMIT $6"
);

/// The overloads of one name, and when they were read.
type CachedRoutines = (Instant, Arc<Vec<Routine>>);

/// Signatures by name, each kept for `ttl`.
pub struct Catalog {
    ttl: Duration,
    /// Keyed by the parsed name, so that a hit allocates nothing.
    cache: Mutex<HashMap<ProcedureName, CachedRoutines>>,
}

impl Catalog {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The routines of a name looked up less than the TTL ago.
    pub fn cached(&self, name: &ProcedureName) -> Option<Arc<Vec<Routine>>> {
        let cache = self.cache.lock().expect("catalog lock");
        let (at, routines) = cache.get(name)?;
        (at.elapsed() < self.ttl).then(|| routines.clone())
    }

    /// Every routine the name resolves to, from the cache or the catalog;
    /// NOT_FOUND when there is none. The session must be reset: the lookup
    /// resolves the name with its search_path.
    pub async fn lookup(&self, client: &Client, name: &ProcedureName) -> Result<Arc<Vec<Routine>>> {
        if let Some(routines) = self.cached(name) {
            return Ok(routines);
        }
        let routines = Arc::new(query(client, name).await?);
        if routines.is_empty() {
            return Err(Error::ProcedureNotFound(format!(
                "procedure {name} does not exist (or the gateway's database user cannot see it)"
            )));
        }
        let mut cache = self.cache.lock().expect("catalog lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(name.clone(), (Instant::now(), routines.clone()));
        Ok(routines)
    }

    /// Drops a cached signature (after the database said it does not match).
    pub fn forget(&self, name: &ProcedureName) {
        self.cache.lock().expect("catalog lock").remove(name);
    }
}

async fn query(client: &Client, name: &ProcedureName) -> Result<Vec<Routine>> {
    let parts: Vec<String> = name.parts().iter().map(|p| p.folded_lower()).collect();
    let (database, schema, object) = match parts.as_slice() {
        [object] => (None, None, object),
        [schema, object] => (None, Some(schema), object),
        [database, schema, object] => (Some(database), Some(schema), object),
        _ => unreachable!("a parsed name has 1 to 3 parts"),
    };
    let rows = client
        .query_typed(
            LOOKUP,
            &[
                (object, Type::TEXT),
                (&schema, Type::TEXT),
                (&database, Type::TEXT),
            ],
        )
        .await
        .map_err(|e| classify(&e))?;
    rows.iter().map(routine_of).collect()
}

/// A row of `routine_columns!` as a routine.
fn routine_of(row: &tokio_postgres::Row) -> Result<Routine> {
    let names: Vec<String> = row.get(5);
    let modes: Vec<String> = row.get(6);
    let bases: Vec<String> = row.get(7);
    let sqls: Vec<String> = row.get(8);
    let n_defaults = row.get::<_, i32>(9) as usize;
    let categories: Vec<String> = row.get(11);
    let category = |c: Option<&String>| c.and_then(|c| c.chars().next()).unwrap_or('U');
    let mut args: Vec<Arg> = bases
        .into_iter()
        .zip(sqls)
        .enumerate()
        .map(|(i, (base, sql))| Arg {
            name: names.get(i).cloned().unwrap_or_default(),
            mode: modes.get(i).map_or(ArgMode::In, |m| ArgMode::from_code(m)),
            pg_type: PgType {
                base,
                sql,
                category: category(categories.get(i)),
            },
            has_default: false,
        })
        .collect();
    // pronargdefaults counts the last input arguments.
    args.iter_mut()
        .rev()
        .filter(|a| a.mode.takes_value())
        .take(n_defaults)
        .for_each(|a| a.has_default = true);
    Ok(Routine {
        schema: row.get(0),
        name: row.get(1),
        arg_types: row.get(13),
        is_procedure: row.get(2),
        returns_set: row.get(3),
        return_type: PgType {
            base: row.get(10),
            sql: row.get(4),
            category: category(row.get::<_, Option<String>>(12).as_ref()),
        },
        args,
    })
}

/// A routine of a catalog page: its position, and the overload ids of its
/// name.
pub struct Listed {
    pub position: String,
    pub routine: Routine,
    pub overloads: Vec<String>,
}

/// The separator of a position's fields: never in a name the catalog holds.
const POSITION_SEPARATOR: char = '\u{1f}';

/// One page of the routines the session's user may execute, after
/// `after` (a position this returned).
pub async fn list(
    client: &Client,
    schema: Option<&str>,
    system_schemas: bool,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Listed>> {
    let (after_schema, after_name, after_oid) = match after {
        None => (String::new(), String::new(), -1i64),
        Some(position) => {
            let mut fields = position.split(POSITION_SEPARATOR);
            match (
                fields.next(),
                fields.next(),
                fields.next().and_then(|o| o.parse().ok()),
            ) {
                (Some(schema), Some(name), Some(oid)) => {
                    (schema.to_string(), name.to_string(), oid)
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "the page_token does not name a place in the catalog".into(),
                    ));
                }
            }
        }
    };
    let limit = limit as i64;
    let rows = client
        .query_typed(
            LIST,
            &[
                (&schema, Type::TEXT),
                (&system_schemas, Type::BOOL),
                (&after_schema, Type::TEXT),
                (&after_name, Type::TEXT),
                (&after_oid, Type::INT8),
                (&limit, Type::INT8),
            ],
        )
        .await
        .map_err(|e| classify(&e))?;
    rows.iter()
        .map(|row| {
            let routine = routine_of(row)?;
            let oid: i64 = row.get(14);
            let types: Vec<String> = row.get(15);
            Ok(Listed {
                position: format!(
                    "{}{POSITION_SEPARATOR}{}{POSITION_SEPARATOR}{oid}",
                    routine.schema, routine.name
                ),
                overloads: types.iter().map(|t| format!("{routine}({t})")).collect(),
                routine,
            })
        })
        .collect()
}
