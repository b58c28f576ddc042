//! Bearer-token authentication for ProcedureService.
//!
//! Every RPC of the service needs `authorization: Bearer <token>` matching
//! one of the configured tokens; health and reflection stay open so that
//! load balancers and tools can probe. Tokens are compared in constant time
//! (and every configured token is compared, so timing says nothing about
//! which one nearly matched). No token configured: no check; the server then
//! refuses to listen beyond loopback (see `config`).

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::Error;

#[derive(Clone)]
pub struct TokenCheck {
    tokens: Arc<Vec<Vec<u8>>>,
}

impl TokenCheck {
    pub fn new(tokens: &[String]) -> Self {
        Self {
            tokens: Arc::new(tokens.iter().map(|t| t.as_bytes().to_vec()).collect()),
        }
    }

    fn verify(&self, header: Option<&[u8]>) -> Result<(), Error> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing token: send the metadata `authorization: Bearer <token>`".into(),
            )
        })?;
        let presented = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization metadata must be `Bearer <token>`".into())
            })?;
        let matched = self
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.as_slice().ct_eq(presented)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("invalid token".into()))
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        self.verify(header)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        let check = TokenCheck::new(&["s3cret".into(), "other".into()]);
        assert!(check.verify(Some(b"Bearer s3cret")).is_ok());
        assert!(check.verify(Some(b"Bearer other")).is_ok());
        for bad in [
            None,
            Some(&b"Bearer wrong"[..]),
            Some(b"s3cret"),
            Some(b"Bearer "),
        ] {
            let err = check.verify(bad).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)));
            assert!(!err.to_string().contains("s3cret"));
        }
        assert!(TokenCheck::new(&[]).verify(None).is_ok());
    }
}
