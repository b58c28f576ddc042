//! Building the anonymous PL/SQL block for a call.
//!
//! ```text
//! BEGIN "PKG_ETL"."PROCESO_LARGO"(P_FECHA => :1, P_RESULTADO => :2); END;
//! BEGIN :ret := "PKG_ETL"."TOTAL"(P_DESDE => :1); END;
//! ```
//!
//! The name is the request's, each part folded as Oracle folds it (plain
//! identifiers upper-cased, quoted ones kept) and always quoted; parameter
//! names are the request's validated identifiers in named notation. Nothing
//! else from the request reaches the text: every value is a placeholder,
//! bound by position in the order the placeholders appear (`:ret` first).

use std::fmt::Write;

use super::catalog::Routine;
use super::types::{Bind, Binding, bind_value, binding_of};
use crate::backend::signature::{DeclaredArg, match_params};
use crate::call::{Param, ProcedureCall, ValueType};
use crate::error::{Error, Result};
use crate::name::{Identifier, ProcedureName};

/// A block ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub text: String,
    /// Positional binds, 1-based in this order.
    pub binds: Vec<Bind>,
    /// Which binds come back, and as what.
    pub outputs: Vec<Output>,
}

/// One value read back after the block ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// 1-based bind position.
    pub position: usize,
    /// The output's name; None for a function's result.
    pub name: Option<String>,
    pub binding: Binding,
    /// The type the client asked for.
    pub wanted: Option<ValueType>,
}

/// Picks the overload the call names, or the one its parameters fit, and
/// builds its block (see `signature::choose_overload`).
pub fn plan<'r>(call: &ProcedureCall, routines: &'r [Routine]) -> Result<(Block, &'r Routine)> {
    crate::backend::signature::choose_overload(
        call,
        routines,
        |r: &Routine| r.overload.clone().unwrap_or_default(),
        |routine| plan_for(call, routine),
    )
}

fn plan_for(call: &ProcedureCall, routine: &Routine) -> Result<Block> {
    let proc_name = &routine.qualified_name;
    let invalid = |msg: String| Error::InvalidArgument(msg);
    let declared: Vec<DeclaredArg<'_>> = routine
        .args
        .iter()
        .map(|a| DeclaredArg {
            name: &a.name,
            direction: a.direction,
            has_default: a.has_default,
            db_type: &a.data_type,
        })
        .collect();
    let supplied = match_params(call, &proc_name, &declared, Identifier::folded_upper)?;

    let mut binds = Vec::new();
    let mut outputs = Vec::new();
    let mut text = String::from("BEGIN ");
    match (&routine.returns, call.returns) {
        (Some(data_type), wanted) => {
            let binding = supported(data_type, None, proc_name, "its result")?;
            text.push_str(":ret := ");
            binds.push(Bind {
                oracle_type: binding.oracle_type.clone(),
                value: None,
            });
            outputs.push(Output {
                position: 1,
                name: None,
                binding,
                wanted,
            });
        }
        (None, Some(_)) => {
            return Err(invalid(format!(
                "{proc_name} is a procedure and returns no value: leave `returns` unset \
                 and read its OUT parameters"
            )));
        }
        (None, None) => {}
    }
    text.push_str(&quoted_name(&call.name));
    text.push('(');

    let mut args_text = Vec::new();
    for (arg, param) in routine.args.iter().zip(&supplied) {
        let sends = param.is_some_and(|p| p.direction.takes_value());
        let returns = arg.direction.returns_value();
        if !(sends || returns) {
            continue; // an IN argument left to its default
        }
        let size = param.and_then(|p| p.size);
        let binding = supported(&arg.data_type, size, proc_name, &arg.name)?;
        let value = match param {
            Some(p) if sends => Some(
                bind_value(p.value.as_ref().expect("IN carries a value"), &binding).map_err(
                    |why| invalid(format!("parameter {} of {proc_name}: {why}", p.name)),
                )?,
            ),
            _ => None,
        };
        binds.push(Bind {
            oracle_type: binding.oracle_type.clone(),
            value,
        });
        let position = binds.len();
        let placeholder = position - usize::from(routine.returns.is_some());
        args_text.push(format!("{} => :{placeholder}", param_name(arg, *param)));
        if returns {
            outputs.push(Output {
                position,
                name: Some(output_name(arg, *param)),
                binding,
                wanted: param.and_then(|p| p.value_type),
            });
        }
    }
    text.push_str(&args_text.join(", "));
    write!(text, "); END;").expect("write to String");
    Ok(Block {
        text,
        binds,
        outputs,
    })
}

fn supported(data_type: &str, size: Option<u32>, proc_name: &str, what: &str) -> Result<Binding> {
    binding_of(data_type, size).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{what} of {proc_name} has Oracle type {data_type}, which procgate cannot bind \
             (objects, collections and records are not supported yet)"
        ))
    })
}

/// `"PKG_ETL"."PROCESO_LARGO"`: parts folded as Oracle does, then quoted.
pub fn quoted_name(name: &ProcedureName) -> String {
    name.parts()
        .iter()
        .map(|p| format!("\"{}\"", p.folded_upper()))
        .collect::<Vec<_>>()
        .join(".")
}

/// A parameter name in named notation: the client's identifier, folded and
/// re-quoted when it was quoted; the catalog's for arguments the client left
/// out (OUT arguments are always passed).
fn param_name(arg: &super::catalog::Arg, param: Option<&Param>) -> String {
    match param {
        Some(p) if p.name.is_quoted() => format!("\"{}\"", p.name.as_written()),
        Some(p) => p.name.folded_upper(),
        None => format!("\"{}\"", arg.name),
    }
}

/// Outputs are keyed by the name the client used, else the catalog's.
fn output_name(arg: &super::catalog::Arg, param: Option<&Param>) -> String {
    param.map_or_else(|| arg.name.clone(), |p| p.name.as_written().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::oracle::catalog::Arg;
    use crate::backend::oracle::types::BindValue;
    use crate::call::Direction;
    use crate::call::{Value, parse_date};
    use oracle::sql_type::OracleType;

    fn arg(name: &str, direction: Direction, data_type: &str, has_default: bool) -> Arg {
        Arg {
            name: name.into(),
            direction,
            data_type: data_type.into(),
            has_default,
        }
    }

    fn param(name: &str, direction: Direction, value: Option<Value>) -> Param {
        Param {
            name: Identifier::parse(name, "parameter name").unwrap(),
            direction,
            value_type: None,
            value,
            size: None,
        }
    }

    fn call(name: &str, params: Vec<Param>) -> ProcedureCall {
        ProcedureCall {
            name: ProcedureName::parse(name).unwrap(),
            display_name: name.into(),
            params,
            returns: None,
            overload: None,
        }
    }

    fn proceso_largo() -> Routine {
        Routine {
            qualified_name: "APP.PKG_ETL.PROCESO_LARGO".into(),
            overload: None,
            returns: None,
            args: vec![
                arg("P_FECHA", Direction::In, "DATE", false),
                arg("P_PASOS", Direction::In, "NUMBER", true),
                arg("P_RESULTADO", Direction::InOut, "VARCHAR2", false),
            ],
        }
    }

    #[test]
    fn procedure_blocks_use_named_notation() {
        let c = call(
            "pkg_etl.proceso_largo",
            vec![
                param(
                    "p_fecha",
                    Direction::In,
                    Some(Value::Date(parse_date("2024-05-01").unwrap())),
                ),
                param(
                    "P_RESULTADO",
                    Direction::InOut,
                    Some(Value::String("x".into())),
                ),
            ],
        );
        let (block, _) = plan(&c, &[proceso_largo()]).unwrap();
        assert_eq!(
            block.text,
            r#"BEGIN "PKG_ETL"."PROCESO_LARGO"(P_FECHA => :1, P_RESULTADO => :2); END;"#
        );
        assert_eq!(block.binds[0].oracle_type, OracleType::Date);
        assert_eq!(block.binds[1].oracle_type, OracleType::Varchar2(32767));
        assert_eq!(block.binds[1].value, Some(BindValue::Text("x".into())));
        assert_eq!(block.outputs.len(), 1);
        assert_eq!(block.outputs[0].position, 2);
        assert_eq!(block.outputs[0].name.as_deref(), Some("P_RESULTADO"));
    }

    #[test]
    fn function_blocks_assign_the_result_first() {
        let routine = Routine {
            qualified_name: "APP.PKG_ETL.TOTAL".into(),
            overload: None,
            returns: Some("NUMBER".into()),
            args: vec![arg("P_DESDE", Direction::In, "DATE", false)],
        };
        let mut c = call(
            "Pkg_Etl.Total",
            vec![param(
                "p_desde",
                Direction::In,
                Some(Value::String("2024-01-01".into())),
            )],
        );
        c.returns = Some(ValueType::Number);
        let (block, _) = plan(&c, &[routine]).unwrap();
        assert_eq!(
            block.text,
            r#"BEGIN :ret := "PKG_ETL"."TOTAL"(P_DESDE => :1); END;"#
        );
        assert_eq!(block.binds.len(), 2);
        assert_eq!(block.outputs[0].position, 1);
        assert_eq!(block.outputs[0].name, None);
        assert_eq!(block.outputs[0].wanted, Some(ValueType::Number));
    }

    #[test]
    fn quoted_names_are_kept_exactly_and_out_arguments_always_bound() {
        let routine = Routine {
            qualified_name: "APP.Mixed.Proc".into(),
            overload: None,
            returns: None,
            args: vec![
                arg("Amount", Direction::In, "NUMBER", false),
                arg("TOTAL", Direction::Out, "NUMBER", false),
                arg("ROWS_OUT", Direction::Out, "REF CURSOR", false),
            ],
        };
        let c = call(
            r#""Mixed"."Proc""#,
            vec![param(r#""Amount""#, Direction::In, Some(Value::Integer(5)))],
        );
        let (block, _) = plan(&c, &[routine]).unwrap();
        assert_eq!(
            block.text,
            r#"BEGIN "Mixed"."Proc"("Amount" => :1, "TOTAL" => :2, "ROWS_OUT" => :3); END;"#
        );
        assert_eq!(block.binds[2].oracle_type, OracleType::RefCursor);
        let names: Vec<_> = block
            .outputs
            .iter()
            .map(|o| o.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["TOTAL", "ROWS_OUT"]);
    }

    #[test]
    fn out_buffers_follow_the_declared_size() {
        let routine = Routine {
            qualified_name: "APP.P".into(),
            overload: None,
            returns: None,
            args: vec![arg("MSG", Direction::Out, "VARCHAR2", false)],
        };
        let mut out = param("msg", Direction::Out, None);
        out.size = Some(4000);
        let (block, _) = plan(&call("p", vec![out]), &[routine]).unwrap();
        assert_eq!(block.binds[0].oracle_type, OracleType::Varchar2(4000));
        assert_eq!(block.outputs[0].name.as_deref(), Some("msg"));
    }

    #[test]
    fn requests_that_do_not_fit_are_refused_before_running() {
        let err = |params| {
            plan(&call("pkg_etl.proceso_largo", params), &[proceso_largo()])
                .unwrap_err()
                .to_string()
        };
        assert!(err(vec![]).contains("missing parameter P_FECHA"));
        let bad_date = err(vec![
            param("p_fecha", Direction::In, Some(Value::Bool(true))),
            param("p_resultado", Direction::Out, None),
        ]);
        assert!(bad_date.contains("parameter p_fecha"), "{bad_date}");
        let unsupported = Routine {
            qualified_name: "APP.P".into(),
            overload: None,
            returns: None,
            args: vec![arg("R", Direction::Out, "PL/SQL RECORD", false)],
        };
        let e = plan(&call("p", vec![]), &[unsupported])
            .unwrap_err()
            .to_string();
        assert!(e.contains("PL/SQL RECORD"), "{e}");
        let mut with_returns = call("pkg_etl.proceso_largo", vec![]);
        with_returns.returns = Some(ValueType::String);
        assert!(plan(&with_returns, &[proceso_largo()]).is_err());
    }
}
