//! What an operations team sees of a running gateway.
//!
//! - [`metrics`]: the Prometheus families, by the names dashboards expect;
//! - [`rpc`]: the tower layer that counts and audits every RPC in one place;
//! - [`audit`]: who called what, to the log and `--audit-log`;
//! - [`trace`]: OpenTelemetry spans over OTLP (`--otlp-endpoint`);
//! - [`endpoint`]: the `--metrics-listen` port (`/metrics`, `/healthz`,
//!   `/readyz`);
//! - `process`: the `process_*` metrics, read from `/proc`.

pub mod audit;
pub mod endpoint;
pub mod metrics;
mod process;
pub mod rpc;
pub mod trace;
