//! The Oracle client library check, done once before anything else.
//!
//! The oracle crate loads Oracle's client library (libclntsh, from Oracle
//! Instant Client) at run time. Without it every connection attempt fails
//! with DPI-1047, and an r2d2 pool would retry for its whole connection
//! timeout before saying so. procgate asks the library for its version
//! first and, when that fails, stops at once with what is missing and how to
//! install it.

use crate::error::{Error, Result};

/// The library's version (`23.5.0.24.7`), or an error that says how to
/// install it.
pub fn check_client_library() -> Result<String> {
    oracle::Version::client()
        .map(|v| v.to_string())
        .map_err(|e| Error::Unavailable(missing_client_message(&e.to_string())))
}

/// The start-up message for a client library that does not load.
pub fn missing_client_message(driver_error: &str) -> String {
    format!(
        "the Oracle client library could not be loaded: {driver_error}\n\
         procgate talks to Oracle through Oracle Instant Client (libclntsh.so, 19c or later). \
         To install it: download \"Basic\" or \"Basic Light\" for your platform from \
         https://www.oracle.com/database/technologies/instant-client/downloads.html, unzip it \
         (e.g. into /opt/oracle/instantclient_23_5), install libaio (Debian/Ubuntu: \
         `apt-get install libaio1` or `libaio1t64`), then make the library findable with \
         `export LD_LIBRARY_PATH=/opt/oracle/instantclient_23_5:$LD_LIBRARY_PATH` (or list the \
         directory in /etc/ld.so.conf.d/oracle.conf and run `ldconfig`) and start procgate \
         again. See docs/oracle.md."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_and_how() {
        let message = missing_client_message(
            "DPI-1047: Cannot locate a 64-bit Oracle Client library: \"libclntsh.so: cannot open shared object file: No such file or directory\"",
        );
        for needle in [
            "DPI-1047",
            "libclntsh",
            "Instant Client",
            "LD_LIBRARY_PATH",
            "ldconfig",
        ] {
            assert!(message.contains(needle), "{needle}");
        }
    }

    /// This machine has no Instant Client: the check must fail fast and
    /// clearly. Where a client is installed, it must report its version.
    #[test]
    fn the_check_answers_at_once() {
        let started = std::time::Instant::now();
        match check_client_library() {
            Ok(version) => assert!(!version.is_empty()),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains("DPI-1047"), "{message}");
                assert!(message.contains("LD_LIBRARY_PATH"), "{message}");
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
