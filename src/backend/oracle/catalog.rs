//! Procedure signatures from ALL_ARGUMENTS, cached briefly.
//!
//! The name is resolved the way PL/SQL would resolve it (synonyms, the
//! current schema, packages) by `DBMS_UTILITY.NAME_RESOLVE`, with the name
//! passed as a bind value. Then ALL_ARGUMENTS gives every overload's
//! arguments: names, IN/OUT/IN OUT, declared types, defaults, and the return
//! type of a function (position 0).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oracle::Connection;
use oracle::sql_type::OracleType;

use super::errors::classify;
use crate::call::Direction;
use crate::error::{DbErrorKind, Error, Result};
use crate::name::ProcedureName;

/// One overload of a name.
#[derive(Debug, Clone, PartialEq)]
pub struct Routine {
    /// OWNER.PACKAGE.NAME or OWNER.NAME, for messages and DescribeProcedure.
    pub qualified_name: String,
    /// ALL_ARGUMENTS.OVERLOAD ("1", "2"…); None when not overloaded.
    pub overload: Option<String>,
    /// The function's return type; None for a procedure.
    pub returns: Option<String>,
    pub args: Vec<Arg>,
}

impl Routine {
    /// Its overload id: ALL_ARGUMENTS.OVERLOAD, empty when not overloaded.
    pub fn id(&self) -> String {
        self.overload.clone().unwrap_or_default()
    }

    /// The owner: the schema the routine lives in.
    pub fn schema(&self) -> &str {
        self.qualified_name
            .split_once('.')
            .map_or(self.qualified_name.as_str(), |(owner, _)| owner)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Upper-case as the catalog keeps it.
    pub name: String,
    pub direction: Direction,
    /// ALL_ARGUMENTS.DATA_TYPE: `VARCHAR2`, `NUMBER`, `REF CURSOR`…
    pub data_type: String,
    pub has_default: bool,
}

/// One row of ALL_ARGUMENTS (top-level arguments only).
#[derive(Debug, Clone, PartialEq)]
pub struct ArgumentRow {
    pub overload: Option<String>,
    pub position: u32,
    pub argument_name: Option<String>,
    pub in_out: String,
    pub data_type: Option<String>,
    pub defaulted: bool,
}

/// Groups ALL_ARGUMENTS rows (ordered by overload, sequence) into routines.
pub fn routines_from_rows(qualified_name: &str, rows: Vec<ArgumentRow>) -> Vec<Routine> {
    let mut routines: Vec<Routine> = Vec::new();
    for row in rows {
        if routines.last().is_none_or(|r| r.overload != row.overload) {
            routines.push(Routine {
                qualified_name: qualified_name.to_string(),
                overload: row.overload.clone(),
                returns: None,
                args: Vec::new(),
            });
        }
        let routine = routines.last_mut().expect("pushed above");
        match (row.position, row.argument_name, row.data_type) {
            // A function's result.
            (0, None, Some(data_type)) => routine.returns = Some(data_type),
            // A procedure without arguments has one empty row.
            (_, None, None) => {}
            (_, name, data_type) => routine.args.push(Arg {
                name: name.unwrap_or_default(),
                direction: match row.in_out.as_str() {
                    "OUT" => Direction::Out,
                    "IN/OUT" => Direction::InOut,
                    _ => Direction::In,
                },
                data_type: data_type.unwrap_or_default(),
                has_default: row.defaulted,
            }),
        }
    }
    routines
}

/// How the name is written for NAME_RESOLVE: parts folded and quoted.
pub fn resolvable_name(name: &ProcedureName) -> String {
    name.parts()
        .iter()
        .map(|p| format!("\"{}\"", p.folded_upper()))
        .collect::<Vec<_>>()
        .join(".")
}

const NAME_RESOLVE: &str = "BEGIN DBMS_UTILITY.NAME_RESOLVE(:1, 1, :2, :3, :4, :5, :6, :7); END;";

const ARGUMENTS: &str = "
SELECT overload, position, argument_name, in_out, data_type, defaulted
  FROM all_arguments
 WHERE owner = :1 AND object_name = :2
   AND NVL(package_name, '~') = NVL(:3, '~')
   AND data_level = 0
 ORDER BY overload NULLS FIRST, sequence";

/// A page of what the user may execute (ALL_PROCEDURES lists only that),
/// with the top-level arguments of each (ALL_ARGUMENTS), in one query:
/// standalone procedures and functions, and package members, keyed by
/// OWNER, OBJECT, MEMBER, OVERLOAD. Oracle-maintained schemas only with
/// :system; :schema is a schema or a package. Bound by name, since :schema
/// occurs three times.
const LIST: &str = "
WITH routines AS (
  SELECT owner, object_name, procedure_name, overload, overloads, key FROM (
    SELECT p.owner, p.object_name, p.procedure_name, p.overload,
           COUNT(*) OVER (PARTITION BY p.owner, p.object_name, p.procedure_name) AS overloads,
           p.owner || CHR(31) || p.object_name || CHR(31) || NVL(p.procedure_name, ' ')
             || CHR(31) || LPAD(NVL(p.overload, '0'), 6, '0') AS key
      FROM all_procedures p
     WHERE (p.object_type IN ('PROCEDURE', 'FUNCTION')
            OR (p.object_type = 'PACKAGE' AND p.procedure_name IS NOT NULL))
       AND (:schema IS NULL OR p.owner = :schema
            OR (p.object_type = 'PACKAGE' AND p.object_name = :schema))
       AND (:system = 1 OR p.owner NOT IN (SELECT username FROM all_users WHERE oracle_maintained = 'Y')))
   WHERE key > :after
   ORDER BY key
   FETCH FIRST :limit ROWS ONLY)
SELECT r.key, r.owner, r.object_name, r.procedure_name, r.overloads,
       a.overload, a.position, a.argument_name, a.in_out, a.data_type, a.defaulted
  FROM routines r
  LEFT JOIN all_arguments a
    ON a.owner = r.owner
   AND a.object_name = NVL(r.procedure_name, r.object_name)
   AND NVL(a.package_name, '~') = CASE WHEN r.procedure_name IS NULL THEN '~' ELSE r.object_name END
   AND NVL(a.overload, '~') = NVL(r.overload, '~')
   AND a.data_level = 0
 ORDER BY r.key, a.sequence";

/// One row of the list query: a routine's key and name, and one of its
/// arguments (none for a routine without any).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRow {
    pub key: String,
    pub owner: String,
    pub object_name: String,
    /// The package member; None for a standalone routine.
    pub member: Option<String>,
    pub overloads: u32,
    pub argument: ArgumentRow,
}

/// A routine of a catalog page, with its position and how many overloads
/// share its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub position: String,
    /// OWNER, then OBJECT or PACKAGE, MEMBER: the name's exact parts.
    pub parts: Vec<String>,
    pub routine: Routine,
    /// The overload ids of its name.
    pub overloads: Vec<String>,
}

/// Groups the list query's rows (ordered by key) into routines.
pub fn listed_from_rows(rows: Vec<ListedRow>) -> Vec<Listed> {
    let mut listed: Vec<(ListedRow, Vec<ArgumentRow>)> = Vec::new();
    for row in rows {
        match listed.last_mut() {
            Some((first, arguments)) if first.key == row.key => arguments.push(row.argument),
            _ => {
                let argument = row.argument.clone();
                listed.push((row, vec![argument]));
            }
        }
    }
    listed
        .into_iter()
        .map(|(first, arguments)| {
            let mut parts = vec![first.owner.clone(), first.object_name.clone()];
            parts.extend(first.member.clone());
            let routine = routines_from_rows(&parts.join("."), arguments)
                .into_iter()
                .next()
                .expect("a routine has at least its first row");
            Listed {
                position: first.key,
                parts,
                routine,
                // ALL_ARGUMENTS numbers a name's overloads from 1.
                overloads: (1..=first.overloads).map(|n| n.to_string()).collect(),
            }
        })
        .collect()
}

/// One page of the routines the user may execute, after `after`.
pub fn list(
    conn: &Connection,
    schema_or_package: Option<&str>,
    system_schemas: bool,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Listed>> {
    let system = i32::from(system_schemas);
    // Below every key: keys start with an owner's name.
    let after = after.unwrap_or(" ");
    let rows = conn
        .query(
            LIST,
            &[&schema_or_package, &system, &after, &(limit as i64)],
        )
        .map_err(|e| classify(&e))?;
    let mut listed = Vec::new();
    for row in rows {
        let row = row.map_err(|e| classify(&e))?;
        let get = |i: usize| -> Result<Option<String>> { row.get(i).map_err(|e| classify(&e)) };
        let defaulted = get(10)?;
        listed.push(ListedRow {
            key: get(0)?.unwrap_or_default(),
            owner: get(1)?.unwrap_or_default(),
            object_name: get(2)?.unwrap_or_default(),
            member: get(3)?,
            overloads: row.get::<_, i64>(4).map_err(|e| classify(&e))? as u32,
            argument: ArgumentRow {
                overload: get(5)?,
                position: row
                    .get::<_, Option<u32>>(6)
                    .map_err(|e| classify(&e))?
                    .unwrap_or(1),
                argument_name: get(7)?,
                in_out: get(8)?.unwrap_or_default(),
                data_type: get(9)?,
                defaulted: defaulted.as_deref() == Some("Y"),
            },
        });
    }
    Ok(listed_from_rows(listed))
}

/// The overloads of one name, and when they were read.
type CachedRoutines = (Instant, Arc<Vec<Routine>>);

pub struct Catalog {
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedRoutines>>,
}

impl Catalog {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Every overload of the name; NOT_FOUND when it does not resolve.
    pub fn lookup(&self, conn: &Connection, name: &ProcedureName) -> Result<Arc<Vec<Routine>>> {
        let key = resolvable_name(name);
        if let Some((at, routines)) = self.cache.lock().expect("catalog lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(routines.clone());
        }
        let routines = Arc::new(query(conn, &key)?);
        if routines.is_empty() {
            return Err(Error::ProcedureNotFound(format!(
                "procedure {name} does not exist (or the gateway's database user cannot execute it)"
            )));
        }
        let mut cache = self.cache.lock().expect("catalog lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), routines.clone()));
        Ok(routines)
    }

    pub fn forget(&self, name: &ProcedureName) {
        self.cache
            .lock()
            .expect("catalog lock")
            .remove(&resolvable_name(name));
    }
}

fn query(conn: &Connection, name: &str) -> Result<Vec<Routine>> {
    let text = OracleType::Varchar2(128);
    let number = OracleType::Number(0, 0);
    let mut resolve = conn
        .statement(NAME_RESOLVE)
        .build()
        .map_err(|e| classify(&e))?;
    let resolved = resolve.execute(&[&name, &text, &text, &text, &text, &number, &number]);
    if let Err(e) = resolved {
        return match classify(&e) {
            Error::Database(db) if db.kind == DbErrorKind::UndefinedObject => Ok(Vec::new()),
            other => Err(other),
        };
    }
    let get =
        |i: usize| -> Result<Option<String>> { resolve.bind_value(i).map_err(|e| classify(&e)) };
    let (schema, part1, part2, dblink) = (get(2)?, get(3)?, get(4)?, get(5)?);
    let part1_type: Option<i64> = resolve.bind_value(6).map_err(|e| classify(&e))?;
    if dblink.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{name} resolves to a database link; call it in its own database"
        )));
    }
    let (Some(schema), Some(part1)) = (schema, part1) else {
        return Ok(Vec::new());
    };
    // part1 is a package (9) whose member is part2, or the routine itself.
    let (package, object) = match (part1_type, part2) {
        (Some(9), Some(member)) => (Some(part1), member),
        (Some(9), None) => {
            return Err(Error::InvalidArgument(format!(
                "{name} is a package; name one of its procedures: {name}.\"PROCEDURE\""
            )));
        }
        (_, _) => (None, part1),
    };
    let qualified = match &package {
        Some(package) => format!("{schema}.{package}.{object}"),
        None => format!("{schema}.{object}"),
    };
    let rows = conn
        .query(ARGUMENTS, &[&schema, &object, &package])
        .map_err(|e| classify(&e))?;
    let mut arguments = Vec::new();
    for row in rows {
        let row = row.map_err(|e| classify(&e))?;
        let defaulted: Option<String> = row.get(5).map_err(|e| classify(&e))?;
        arguments.push(ArgumentRow {
            overload: row.get(0).map_err(|e| classify(&e))?,
            position: row.get(1).map_err(|e| classify(&e))?,
            argument_name: row.get(2).map_err(|e| classify(&e))?,
            in_out: row.get(3).map_err(|e| classify(&e))?,
            data_type: row.get(4).map_err(|e| classify(&e))?,
            defaulted: defaulted.as_deref() == Some("Y"),
        });
    }
    Ok(routines_from_rows(&qualified, arguments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        overload: Option<&str>,
        position: u32,
        name: Option<&str>,
        in_out: &str,
        data_type: Option<&str>,
        defaulted: bool,
    ) -> ArgumentRow {
        ArgumentRow {
            overload: overload.map(Into::into),
            position,
            argument_name: name.map(Into::into),
            in_out: in_out.into(),
            data_type: data_type.map(Into::into),
            defaulted,
        }
    }

    #[test]
    fn rows_become_routines() {
        let routines = routines_from_rows(
            "APP.PKG_ETL.PROCESO_LARGO",
            vec![
                row(None, 1, Some("P_FECHA"), "IN", Some("DATE"), false),
                row(None, 2, Some("P_PASOS"), "IN", Some("NUMBER"), true),
                row(
                    None,
                    3,
                    Some("P_RESULTADO"),
                    "IN/OUT",
                    Some("VARCHAR2"),
                    false,
                ),
                row(None, 4, Some("P_CUR"), "OUT", Some("REF CURSOR"), false),
            ],
        );
        assert_eq!(routines.len(), 1);
        let r = &routines[0];
        assert_eq!(r.returns, None);
        assert_eq!(r.schema(), "APP");
        assert_eq!(r.args.len(), 4);
        assert_eq!(r.args[1].name, "P_PASOS");
        assert!(r.args[1].has_default);
        assert_eq!(r.args[2].direction, Direction::InOut);
        assert_eq!(r.args[3].direction, Direction::Out);
        assert_eq!(r.args[3].data_type, "REF CURSOR");
    }

    #[test]
    fn functions_overloads_and_empty_procedures() {
        let routines = routines_from_rows(
            "APP.PKG.F",
            vec![
                row(Some("1"), 0, None, "OUT", Some("NUMBER"), false),
                row(Some("1"), 1, Some("X"), "IN", Some("NUMBER"), false),
                row(Some("2"), 0, None, "OUT", Some("VARCHAR2"), false),
                row(Some("2"), 1, Some("T"), "IN", Some("VARCHAR2"), false),
            ],
        );
        assert_eq!(routines.len(), 2);
        assert_eq!(routines[0].returns.as_deref(), Some("NUMBER"));
        assert_eq!(routines[1].overload.as_deref(), Some("2"));
        assert_eq!(routines[1].args[0].name, "T");

        let empty = routines_from_rows("APP.P", vec![row(None, 1, None, "IN", None, false)]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].args.is_empty());
        assert_eq!(empty[0].returns, None);
    }

    fn listed(
        key: &str,
        owner: &str,
        object: &str,
        member: Option<&str>,
        overloads: u32,
        argument: ArgumentRow,
    ) -> ListedRow {
        ListedRow {
            key: key.into(),
            owner: owner.into(),
            object_name: object.into(),
            member: member.map(Into::into),
            overloads,
            argument,
        }
    }

    #[test]
    fn a_catalog_page_becomes_one_routine_per_overload() {
        let page = listed_from_rows(vec![
            // APP.PKG_REP.F, two overloads: a function of NUMBER, one of VARCHAR2.
            listed(
                "APP\u{1f}PKG_REP\u{1f}F\u{1f}000001",
                "APP",
                "PKG_REP",
                Some("F"),
                2,
                row(Some("1"), 0, None, "OUT", Some("NUMBER"), false),
            ),
            listed(
                "APP\u{1f}PKG_REP\u{1f}F\u{1f}000001",
                "APP",
                "PKG_REP",
                Some("F"),
                2,
                row(Some("1"), 1, Some("X"), "IN", Some("NUMBER"), false),
            ),
            listed(
                "APP\u{1f}PKG_REP\u{1f}F\u{1f}000002",
                "APP",
                "PKG_REP",
                Some("F"),
                2,
                row(Some("2"), 0, None, "OUT", Some("VARCHAR2"), false),
            ),
            listed(
                "APP\u{1f}PKG_REP\u{1f}F\u{1f}000002",
                "APP",
                "PKG_REP",
                Some("F"),
                2,
                row(Some("2"), 1, Some("T"), "IN", Some("VARCHAR2"), true),
            ),
            // APP.LIMPIAR: a standalone procedure without arguments (no
            // ALL_ARGUMENTS row: the left join gives one empty row).
            listed(
                "APP\u{1f}LIMPIAR\u{1f} \u{1f}000000",
                "APP",
                "LIMPIAR",
                None,
                1,
                row(None, 1, None, "", None, false),
            ),
        ]);
        assert_eq!(page.len(), 3);
        assert_eq!(page[0].parts, ["APP", "PKG_REP", "F"]);
        assert_eq!(page[0].routine.qualified_name, "APP.PKG_REP.F");
        assert_eq!(page[0].routine.overload.as_deref(), Some("1"));
        assert_eq!(page[0].routine.returns.as_deref(), Some("NUMBER"));
        assert_eq!(page[0].routine.args.len(), 1);
        assert_eq!(page[0].overloads, ["1", "2"]);
        assert_eq!(page[1].routine.overload.as_deref(), Some("2"));
        assert_eq!(page[1].routine.args[0].name, "T");
        assert!(page[1].routine.args[0].has_default);
        assert_eq!(page[1].position, "APP\u{1f}PKG_REP\u{1f}F\u{1f}000002");
        assert_eq!(page[2].parts, ["APP", "LIMPIAR"]);
        assert!(page[2].routine.args.is_empty());
        assert_eq!(page[2].routine.returns, None);
        assert_eq!(page[2].overloads, ["1"]);
    }

    #[test]
    fn names_are_resolved_folded_and_quoted() {
        let name = ProcedureName::parse(r#"pkg_etl."Mixed".proc$1"#).unwrap();
        assert_eq!(resolvable_name(&name), r#""PKG_ETL"."Mixed"."PROC$1""#);
    }
}
