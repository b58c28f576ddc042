//! Matching a request's parameters to a procedure's declared arguments.
//!
//! Every backend reads a signature from its catalog (pg_proc, ALL_ARGUMENTS)
//! and must refuse the same mistakes with the same messages before anything
//! runs: a parameter the procedure does not have, a direction it does not
//! allow, a required argument left out. This is that one check.

use crate::call::{Direction, Param, ProcedureCall};
use crate::error::{Error, Result};
use crate::name::Identifier;

/// What a backend's catalog says of one argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeclaredArg<'a> {
    /// As the catalog spells it (folded); empty for an unnamed argument.
    pub name: &'a str,
    pub direction: Direction,
    pub has_default: bool,
    /// The database's name of its type, for messages.
    pub db_type: &'a str,
}

/// For each declared argument, the request parameter that supplies it.
/// `fold` renders a request name the way the catalog spells names.
pub fn match_params<'c>(
    call: &'c ProcedureCall,
    proc_name: &dyn std::fmt::Display,
    args: &[DeclaredArg<'_>],
    fold: impl Fn(&Identifier) -> String,
) -> Result<Vec<Option<&'c Param>>> {
    let mut supplied: Vec<Option<&Param>> = vec![None; args.len()];
    for param in &call.params {
        let wanted = fold(&param.name);
        let index = args
            .iter()
            .position(|a| !a.name.is_empty() && a.name == wanted)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{proc_name} has no parameter {}; its parameters are: {}",
                    param.name,
                    describe(args)
                ))
            })?;
        check_direction(&args[index], param, proc_name)?;
        supplied[index] = Some(param);
    }
    for (arg, param) in args.iter().zip(&supplied) {
        if param.is_none() && arg.direction.takes_value() && !arg.has_default {
            return Err(Error::InvalidArgument(if arg.name.is_empty() {
                format!(
                    "{proc_name} has an unnamed parameter without a default; \
                     procgate passes parameters by name"
                )
            } else {
                format!(
                    "missing parameter {} ({}) of {proc_name}",
                    arg.name, arg.db_type
                )
            }));
        }
    }
    Ok(supplied)
}

fn check_direction(
    arg: &DeclaredArg<'_>,
    param: &Param,
    proc_name: &dyn std::fmt::Display,
) -> Result<()> {
    let how = match (arg.direction, param.direction) {
        (declared, asked) if declared == asked => return Ok(()),
        (Direction::InOut, _) => return Ok(()),
        (Direction::In, _) => "IN: send a value and no OUT direction",
        (Direction::Out, _) => "OUT: declare it with direction OUT and no value",
    };
    Err(Error::InvalidArgument(format!(
        "parameter {} of {proc_name} is {how}",
        param.name
    )))
}

fn describe(args: &[DeclaredArg<'_>]) -> String {
    if args.is_empty() {
        return "(none)".into();
    }
    args.iter()
        .map(|a| {
            let mode = match a.direction {
                Direction::In => "IN",
                Direction::Out => "OUT",
                Direction::InOut => "IN OUT",
            };
            format!("{} {mode} {}", a.name, a.db_type)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The overload named `id`; NOT_FOUND listing the ids there are.
pub fn overload_by_id<'r, R>(
    name: &dyn std::fmt::Display,
    routines: &'r [R],
    id_of: impl Fn(&R) -> String,
    id: &str,
) -> Result<&'r R> {
    routines.iter().find(|r| id_of(r) == id).ok_or_else(|| {
        let ids: Vec<String> = routines.iter().map(&id_of).collect();
        Error::ProcedureNotFound(if ids.len() > 1 {
            format!(
                "{name} has no overload {}; its overloads: {}",
                crate::name::printable(id),
                ids.join(", ")
            )
        } else {
            format!(
                "{name} is not overloaded: leave overload empty (it named {})",
                crate::name::printable(id)
            )
        })
    })
}

/// The overload a call runs, and its plan: the one it names, else the one
/// its parameters fit. When they fit several, the call must name one, and
/// the error lists their ids; when they fit none, it says why the first
/// does not fit.
pub fn choose_overload<'r, R, P>(
    call: &ProcedureCall,
    routines: &'r [R],
    id_of: impl Fn(&R) -> String,
    plan_for: impl Fn(&R) -> Result<P>,
) -> Result<(P, &'r R)> {
    if let Some(id) = &call.overload {
        let routine = overload_by_id(&call.name, routines, &id_of, id)?;
        return plan_for(routine).map(|plan| (plan, routine));
    }
    let mut fits = Vec::new();
    let mut first_error = None;
    for routine in routines {
        match plan_for(routine) {
            Ok(plan) => fits.push((plan, routine)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match fits.len() {
        1 => Ok(fits.remove(0)),
        0 => Err(first_error
            .unwrap_or_else(|| Error::ProcedureNotFound(format!("{} does not exist", call.name)))),
        n => {
            let ids: Vec<String> = fits.iter().map(|(_, r)| id_of(r)).collect();
            Err(Error::InvalidArgument(format!(
                "{} has {n} overloads that these parameters fit: {}; name one in the call's \
                 overload",
                call.name,
                ids.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Value;
    use crate::name::ProcedureName;

    fn param(name: &str, direction: Direction) -> Param {
        Param {
            name: Identifier::parse(name, "parameter name").unwrap(),
            direction,
            value_type: None,
            value: direction.takes_value().then_some(Value::Integer(1)),
            size: None,
        }
    }

    fn call(params: Vec<Param>) -> ProcedureCall {
        ProcedureCall {
            name: ProcedureName::parse("p").unwrap(),
            display_name: "p".into(),
            params,
            returns: None,
            overload: None,
        }
    }

    const ARGS: [DeclaredArg<'static>; 3] = [
        DeclaredArg {
            name: "a",
            direction: Direction::In,
            has_default: false,
            db_type: "integer",
        },
        DeclaredArg {
            name: "b",
            direction: Direction::InOut,
            has_default: true,
            db_type: "text",
        },
        DeclaredArg {
            name: "c",
            direction: Direction::Out,
            has_default: false,
            db_type: "numeric",
        },
    ];

    #[test]
    fn params_are_matched_by_folded_name() {
        let c = call(vec![param("C", Direction::Out), param("A", Direction::In)]);
        let matched = match_params(&c, &"p", &ARGS, Identifier::folded_lower).unwrap();
        assert_eq!(matched[0].unwrap().name.as_written(), "A");
        assert!(matched[1].is_none());
        assert_eq!(matched[2].unwrap().name.as_written(), "C");
    }

    #[test]
    fn mistakes_are_named() {
        let check = |params| {
            match_params(&call(params), &"p", &ARGS, Identifier::folded_lower)
                .unwrap_err()
                .to_string()
        };
        assert!(check(vec![]).contains("missing parameter a (integer)"));
        let unknown = check(vec![param("a", Direction::In), param("zz", Direction::In)]);
        assert!(unknown.contains("no parameter zz"), "{unknown}");
        assert!(unknown.contains("a IN integer, b IN OUT text, c OUT numeric"));
        assert!(check(vec![param("a", Direction::Out)]).contains("parameter a of p is IN"));
        assert!(
            check(vec![param("a", Direction::In), param("c", Direction::In)]).contains("is OUT")
        );
    }
}
