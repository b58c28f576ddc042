//! The audit trail: one event per RPC that names a procedure, a job or a
//! schedule, saying who called what, from where, and how it ended.
//!
//! Each event goes to the log on the target `procgate::audit` (one JSON
//! object per line with `--log-format json`) and, with `--audit-log FILE`,
//! to that file alone, appended as JSON lines and reopened on SIGHUP so
//! that logrotate can move it away. An event never holds parameter values,
//! outputs, messages or secrets: only names, ids and codes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tonic::Code;
use tracing::warn;

use crate::api::status::code_name;
use crate::error::{Error, Result};

/// One audited RPC.
pub struct AuditEvent<'a> {
    /// The token's name or the JWT's subject; empty without authentication.
    pub owner: &'a str,
    pub peer: Option<SocketAddr>,
    /// `procgate.v1.ProcedureService/ExecuteSync`.
    pub method: &'a str,
    pub procedure: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub schedule_id: Option<&'a str>,
    pub code: Code,
    pub db_code: Option<&'a str>,
    pub duration: Duration,
}

/// A line of the audit file.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    owner: &'a str,
    peer: String,
    method: &'a str,
    procedure: &'a str,
    job_id: &'a str,
    schedule_id: &'a str,
    code: &'a str,
    db_code: &'a str,
    /// Seconds.
    duration: f64,
}

/// Where audit events go.
#[derive(Clone, Default)]
pub struct Audit {
    file: Option<Arc<AuditFile>>,
}

struct AuditFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Error::InvalidArgument(format!("cannot open the audit log {}: {e}", path.display()))
        })
}

impl Audit {
    /// Events to the log, and to `file` when given (opened now, so that a
    /// bad path stops the start).
    pub fn new(file: Option<&Path>) -> Result<Audit> {
        let file = match file {
            Some(path) => Some(Arc::new(AuditFile {
                path: path.to_path_buf(),
                file: Mutex::new(open(path)?),
            })),
            None => None,
        };
        Ok(Audit { file })
    }

    /// Reopens the audit file (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) -> Result<()> {
        if let Some(audit) = &self.file {
            let reopened = open(&audit.path)?;
            *audit.file.lock().expect("audit file lock") = reopened;
        }
        Ok(())
    }

    pub fn record(&self, event: &AuditEvent<'_>) {
        // Nothing to format when neither the log nor a file wants it.
        let logged = tracing::enabled!(target: "procgate::audit", tracing::Level::INFO);
        if !logged && self.file.is_none() {
            return;
        }
        let peer = event.peer.map(|p| p.to_string()).unwrap_or_default();
        let code = code_name(event.code);
        let duration = event.duration.as_secs_f64();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // A root event: the audit trail is not copied into traces.
        tracing::info!(
            target: "procgate::audit",
            parent: None,
            time = %time,
            owner = event.owner,
            peer = %peer,
            method = event.method,
            procedure = event.procedure.unwrap_or_default(),
            job_id = event.job_id.unwrap_or_default(),
            schedule_id = event.schedule_id.unwrap_or_default(),
            code,
            db_code = event.db_code.unwrap_or_default(),
            duration,
            "rpc"
        );
        let Some(audit) = &self.file else {
            return;
        };
        let line = Line {
            time,
            owner: event.owner,
            peer,
            method: event.method,
            procedure: event.procedure.unwrap_or_default(),
            job_id: event.job_id.unwrap_or_default(),
            schedule_id: event.schedule_id.unwrap_or_default(),
            code,
            db_code: event.db_code.unwrap_or_default(),
            duration,
        };
        let mut text = serde_json::to_string(&line).expect("an audit line serializes");
        text.push('\n');
        // One write per line, in append mode: lines never interleave.
        if let Err(e) = audit
            .file
            .lock()
            .expect("audit file lock")
            .write_all(text.as_bytes())
        {
            warn!(error = %e, path = %audit.path.display(), "writing the audit log failed");
        }
    }
}
