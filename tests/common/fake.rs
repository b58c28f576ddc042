//! A scripted in-process backend, so that the job engine's tests run in
//! milliseconds against either store. The procedure's name says what it
//! does:
//!
//! - `fake.ok`: answers at once with `done = true`;
//! - `fake.progress`: reports 10, 30, 50, 70, 90 % with a message each,
//!   prints a line, then answers;
//! - `fake.fail`: fails as a procedure's RAISE would (P0001);
//! - `fake.block`: runs until it is cancelled;
//! - `fake.unreachable_once`: the first call finds the database gone before
//!   it gets a connection (UNAVAILABLE, nothing ran); later calls answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use procgate::backend::{Backend, Interrupt, Phase, ProcedureDescription, Progress, SessionTag};
use procgate::call::{Outputs, ProcedureCall, Value};
use procgate::error::{DbError, DbErrorKind, Error, Result};
use procgate::name::ProcedureName;

#[derive(Default)]
pub struct FakeBackend {
    /// Whether `fake.unreachable_once` has failed its once.
    unreachable_done: AtomicBool,
}

#[async_trait::async_trait]
impl Backend for FakeBackend {
    async fn execute(
        &self,
        call: &ProcedureCall,
        progress: &Arc<dyn Progress>,
        interrupt: &Interrupt,
        _tag: &SessionTag,
    ) -> Result<Outputs> {
        if call.display_name == "fake.unreachable_once"
            && !self.unreachable_done.swap(true, Ordering::SeqCst)
        {
            return Err(Error::Unavailable(
                "the database is unreachable: connection refused".into(),
            ));
        }
        progress.phase(Phase::ConnectionAcquired);
        if interrupt.is_requested() {
            return Err(cancelled());
        }
        progress.phase(Phase::Executing);
        let done = || {
            let mut outputs = Outputs::default();
            outputs.values.insert("done".into(), Value::Bool(true));
            Ok(outputs)
        };
        match call.display_name.as_str() {
            "fake.ok" | "fake.unreachable_once" => done(),
            "fake.progress" => {
                for percent in [10, 30, 50, 70, 90] {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    progress.report(percent, Some(format!("step {percent}")));
                }
                progress.message("all steps done".into());
                done()
            }
            "fake.fail" => Err(Error::Database(DbError {
                kind: DbErrorKind::UserRaised,
                code: "P0001".into(),
                message: "scripted failure".into(),
            })),
            "fake.block" => {
                interrupt.requested().await;
                Err(cancelled())
            }
            other => Err(Error::Database(DbError {
                kind: DbErrorKind::UndefinedObject,
                code: "42883".into(),
                message: format!("the fake backend has no procedure {other}"),
            })),
        }
    }

    async fn describe(
        &self,
        name: &ProcedureName,
        _overload: Option<&str>,
    ) -> Result<ProcedureDescription> {
        Ok(ProcedureDescription {
            procedure: name.to_string(),
            params: Vec::new(),
            returns: None,
            returns_db_type: String::new(),
            overload: String::new(),
            overloads: Vec::new(),
        })
    }

    async fn ping(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

fn cancelled() -> Error {
    Error::Database(DbError {
        kind: DbErrorKind::Cancelled,
        code: "57014".into(),
        message: "canceling statement due to user request".into(),
    })
}
