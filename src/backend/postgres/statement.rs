//! Building the statement for a call: `CALL` for procedures, `SELECT * FROM`
//! for functions, always with named notation and bound values.
//!
//! The text contains only catalog names (schema, routine, parameter names as
//! the catalog spells them, re-quoted) and catalog type names in casts; every
//! value is a `$n` parameter bound as text. The request is checked against
//! the signature first (unknown or missing parameters, wrong directions,
//! values that do not fit), so that nothing half-runs.

use std::fmt::Write;

use crate::backend::postgres::catalog::{ArgMode, Routine};
use crate::backend::postgres::{json, types};
use crate::backend::signature::{DeclaredArg, match_params};
use crate::call::ProcedureCall;
use crate::error::{Error, Result};
use crate::name::Identifier;

/// A statement ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sql: String,
    /// `$1..$n`, as text (None = NULL).
    pub binds: Vec<Option<String>>,
    /// The parameter each bind is for, as the client wrote it (messages).
    pub bind_names: Vec<String>,
    pub shape: Shape,
    /// A cursor comes back, so the call runs in a transaction that keeps it
    /// open until its rows are fetched.
    pub returns_cursor: bool,
}

/// How the result row(s) become outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `CALL`: one row whose columns are the OUT / IN OUT values.
    Procedure,
    /// A function with OUT parameters: one row of OUT values.
    FunctionOutParams,
    /// A scalar function: one row, one column, the return value.
    FunctionScalar,
    /// A set-returning function: every row is the return value.
    FunctionSet,
}

/// Picks the overload the call names, or the one its parameters fit, and
/// builds its statement (see `signature::choose_overload`).
pub fn plan<'r>(call: &ProcedureCall, routines: &'r [Routine]) -> Result<(Plan, &'r Routine)> {
    crate::backend::signature::choose_overload(call, routines, Routine::identity, |routine| {
        plan_for(call, routine)
    })
}

fn plan_for(call: &ProcedureCall, routine: &Routine) -> Result<Plan> {
    let invalid = |msg: String| Error::InvalidArgument(msg);
    if routine.is_procedure && call.returns.is_some() {
        return Err(invalid(format!(
            "{routine} is a procedure and returns no value: leave `returns` unset \
             and read its OUT parameters"
        )));
    }
    let declared: Vec<DeclaredArg<'_>> = routine
        .args
        .iter()
        .map(|a| DeclaredArg {
            name: &a.name,
            direction: a.mode.direction(),
            has_default: a.has_default,
            db_type: &a.pg_type.sql,
        })
        .collect();
    let supplied = match_params(call, routine, &declared, Identifier::folded_lower)?;

    let shape = if routine.is_procedure {
        Shape::Procedure
    } else if routine.returns_set {
        Shape::FunctionSet
    } else if routine
        .args
        .iter()
        .any(|a| matches!(a.mode, ArgMode::Out | ArgMode::InOut))
    {
        Shape::FunctionOutParams
    } else {
        Shape::FunctionScalar
    };
    // A scalar function is selected as one value, so that one composite
    // result stays one value rather than spreading into its columns.
    let mut sql = String::with_capacity(64 + 32 * routine.args.len());
    sql.push_str(match shape {
        Shape::Procedure => "CALL ",
        Shape::FunctionScalar => "SELECT ",
        Shape::FunctionSet | Shape::FunctionOutParams => "SELECT * FROM ",
    });
    push_ident(&mut sql, &routine.schema);
    sql.push('.');
    push_ident(&mut sql, &routine.name);
    sql.push('(');

    let mut binds = Vec::with_capacity(supplied.len());
    let mut bind_names = Vec::with_capacity(supplied.len());
    let mut first = true;
    for (arg, param) in routine.args.iter().zip(&supplied) {
        let passes_value = param.is_some_and(|p| p.direction.takes_value());
        let bound = arg.mode.takes_value() && passes_value;
        // An IN OUT declared OUT by the client gets NULL in; CALL needs
        // every OUT argument, as NULL.
        let null = !bound
            && ((arg.mode == ArgMode::InOut && param.is_some())
                || (routine.is_procedure && arg.mode == ArgMode::Out));
        if !bound && !null {
            continue;
        }
        if !std::mem::take(&mut first) {
            sql.push_str(", ");
        }
        push_ident(&mut sql, &arg.name);
        if null {
            sql.push_str(" => NULL");
            continue;
        }
        let param = param.expect("checked above");
        let value = param.value.as_ref().expect("IN parameters carry a value");
        let text = types::encode(value, &arg.pg_type)
            .map_err(|why| invalid(format!("parameter {} of {routine}: {why}", param.name)))?;
        binds.push(text);
        bind_names.push(param.name.as_written().to_string());
        write!(sql, " => ${}::{}", binds.len(), arg.pg_type.sql).expect("write to String");
    }
    sql.push(')');

    let returns_cursor = routine.return_type.base == "refcursor"
        || routine
            .args
            .iter()
            .any(|a| a.pg_type.base == "refcursor" && a.mode.direction().returns_value());
    Ok(Plan {
        sql,
        binds,
        bind_names,
        shape,
        returns_cursor,
    })
}

impl Plan {
    /// The binds, with JSON for array and composite parameters turned into
    /// the literals their types' input functions parse; `params` are the
    /// parameter types the prepared statement reports. None when no bind
    /// needs it, the usual case.
    pub fn structured_binds(
        &self,
        params: &[tokio_postgres::types::Type],
        proc_name: &dyn std::fmt::Display,
    ) -> Result<Option<Vec<Option<String>>>> {
        let mut converted: Option<Vec<Option<String>>> = None;
        for (i, (bind, ty)) in self.binds.iter().zip(params).enumerate() {
            let Some(text) = bind else { continue };
            let literal = json::literal(ty, text).map_err(|why| {
                Error::InvalidArgument(format!(
                    "parameter {} of {proc_name}: {why}",
                    self.bind_names[i]
                ))
            })?;
            if let Some(literal) = literal {
                converted.get_or_insert_with(|| self.binds.clone())[i] = Some(literal);
            }
        }
        Ok(converted)
    }
}

/// Double-quotes a catalog identifier, doubling any quote inside.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    push_ident(&mut quoted, name);
    quoted
}

fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    for c in name.chars() {
        if c == '"' {
            sql.push('"');
        }
        sql.push(c);
    }
    sql.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::postgres::catalog::{Arg, PgType};
    use crate::call::{Direction, Param, Value, ValueType};
    use crate::name::{Identifier, ProcedureName};

    fn arg(name: &str, mode: ArgMode, base: &str, has_default: bool) -> Arg {
        Arg {
            name: name.into(),
            mode,
            pg_type: PgType {
                base: base.into(),
                sql: base.into(),
                category: 'S',
            },
            has_default,
        }
    }

    fn routine(is_procedure: bool, args: Vec<Arg>) -> Routine {
        Routine {
            schema: "public".into(),
            name: "sum_it".into(),
            arg_types: String::new(),
            is_procedure,
            returns_set: false,
            return_type: PgType {
                base: "void".into(),
                sql: "void".into(),
                category: 'P',
            },
            args,
        }
    }

    fn param(name: &str, direction: Direction, value: Option<Value>) -> Param {
        Param {
            name: Identifier::parse(name, "parameter name").unwrap(),
            direction,
            value_type: value.as_ref().and_then(Value::natural_type),
            value,
            size: None,
        }
    }

    fn call(params: Vec<Param>) -> ProcedureCall {
        ProcedureCall {
            name: ProcedureName::parse("sum_it").unwrap(),
            display_name: "sum_it".into(),
            params,
            returns: None,
            overload: None,
        }
    }

    #[test]
    fn procedures_are_called_by_name_with_out_arguments_as_null() {
        let r = routine(
            true,
            vec![
                arg("a", ArgMode::In, "int4", false),
                arg("b", ArgMode::In, "int4", true),
                arg("total", ArgMode::Out, "int4", false),
                arg("note", ArgMode::InOut, "text", false),
            ],
        );
        let c = call(vec![
            param(
                "note",
                Direction::InOut,
                Some(Value::String("x'); drop".into())),
            ),
            param("A", Direction::In, Some(Value::Integer(2))),
        ]);
        let (plan, _) = plan(&c, std::slice::from_ref(&r)).unwrap();
        assert_eq!(
            plan.sql,
            r#"CALL "public"."sum_it"("a" => $1::int4, "total" => NULL, "note" => $2::text)"#
        );
        assert_eq!(plan.binds, vec![Some("2".into()), Some("x'); drop".into())]);
        assert_eq!(plan.shape, Shape::Procedure);
    }

    #[test]
    fn requests_that_do_not_fit_the_signature_are_refused() {
        let r = routine(
            true,
            vec![
                arg("a", ArgMode::In, "int4", false),
                arg("total", ArgMode::Out, "int4", false),
            ],
        );
        let plan_err = |params| plan(&call(params), std::slice::from_ref(&r)).unwrap_err();
        let unknown = plan_err(vec![param("zzz", Direction::In, Some(Value::Integer(1)))]);
        assert!(
            unknown.to_string().contains("no parameter zzz"),
            "{unknown}"
        );
        let missing = plan_err(vec![]);
        assert!(
            missing.to_string().contains("missing parameter a"),
            "{missing}"
        );
        let wrong_dir = plan_err(vec![
            param("a", Direction::In, Some(Value::Integer(1))),
            param("total", Direction::In, Some(Value::Integer(1))),
        ]);
        assert!(wrong_dir.to_string().contains("total"), "{wrong_dir}");
        let bad_value = plan_err(vec![param(
            "a",
            Direction::In,
            Some(Value::String("x".into())),
        )]);
        assert!(bad_value.to_string().contains("parameter a"), "{bad_value}");
        let mut with_returns = call(vec![param("a", Direction::In, Some(Value::Integer(1)))]);
        with_returns.returns = Some(ValueType::Integer);
        assert!(plan(&with_returns, std::slice::from_ref(&r)).is_err());
    }

    #[test]
    fn functions_are_selected_and_shaped() {
        let mut f = routine(false, vec![arg("x", ArgMode::In, "numeric", false)]);
        f.return_type = PgType {
            base: "refcursor".into(),
            sql: "refcursor".into(),
            category: 'U',
        };
        let c = call(vec![param(
            "x",
            Direction::In,
            Some(Value::Number("1.50".into())),
        )]);
        let (p, _) = plan(&c, std::slice::from_ref(&f)).unwrap();
        assert_eq!(p.sql, r#"SELECT "public"."sum_it"("x" => $1::numeric)"#);
        assert_eq!(p.shape, Shape::FunctionScalar);
        assert!(p.returns_cursor);
    }

    #[test]
    fn identifiers_are_requoted() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }
}
