//! procgate: a gRPC gateway to stored procedures.
//!
//! A request travels down these layers, each in its own module:
//!
//! ```text
//! client ── gRPC ──▶ server     listener, health, reflection, shutdown   (server.rs)
//!                    telemetry  metrics, audit, per-RPC layer, /metrics   (telemetry/)
//!                    auth       named tokens and JWTs, as a tower layer    (auth/)
//!                    api        validate, convert, one error→Status map   (api/)
//!                    allow      --allow, closed system schemas            (allow.rs)
//!                    policy     --policy: roles allow and deny procedures (policy.rs)
//!      sync calls ─▶ sync_call  deadline + cancel-on-disconnect           (sync_call.rs)
//!            jobs ─▶ jobs       lifecycle, table, engine, hub, feed      (jobs/)
//!                    backend    async trait Backend, interrupt, progress  (backend/)
//!                      ├─ postgres  tokio-postgres: pool, clean sessions,  (backend/postgres/)
//!                      │            catalog, statement, exec, decode
//!                      └─ oracle    blocking driver on spawn_blocking:     (backend/oracle/)
//!                                   pool, catalog, block, types, LONGOPS
//! ```
//!
//! The domain types in [`call`] and [`name`] are shared by every layer and
//! know nothing of protobuf or drivers. [`error`] classifies every failure;
//! `api::status` turns it into a gRPC status. [`config`] is the command line,
//! [`embedded`] the throwaway PostgreSQL used when no database is configured.

pub mod allow;
pub mod api;
pub mod auth;
pub mod backend;
pub mod call;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod error;
pub mod flight;
pub mod jobs;
pub mod name;
pub mod policy;
pub mod schedules;
pub mod server;
pub mod spool;
pub mod sync_call;
pub mod telemetry;

/// The generated protobuf types and gRPC stubs of `procgate.v1`.
pub mod proto {
    tonic::include_proto!("procgate.v1");

    /// The encoded descriptor set, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("procgate_descriptor");
}
