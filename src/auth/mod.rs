//! Who is calling: bearer tokens, named ([`tokens`]) or JWTs ([`jwt`]).
//!
//! Every RPC of ProcedureService and Flight needs `authorization: Bearer
//! <token>`; health and reflection stay open so that load balancers and
//! tools can probe. The check is a tower layer rather than a tonic
//! interceptor because a JWT naming a key id not yet known makes it fetch
//! the key set again, which is asynchronous. It puts the [`Caller`] into the
//! request's extensions, where the handlers find it ([`caller_of`]), and
//! names the owner in the RPC's audit notes.
//!
//! No token and no JWT key set configured: no check, every caller is an
//! anonymous admin, and the server refuses to listen beyond loopback (see
//! `config`).

mod fetch;
pub mod jwt;
pub mod tokens;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::Status;
use tonic::server::NamedService;
use tracing::debug;

use crate::error::{Error, Result};
use crate::policy::PolicyCheck;
use crate::telemetry::rpc::RpcNotes;
use jwt::JwtCheck;
use tokens::TokenCheck;

/// Who is calling, as the authentication layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name or the JWT's owner claim; empty without
    /// authentication. It owns the jobs and schedules the caller creates.
    pub name: Arc<str>,
    /// Admins see and manage every job; others only their own.
    pub admin: bool,
    /// The roles the token file or the JWT gives (see `--policy`).
    pub roles: Roles,
}

impl Caller {
    /// The caller when no authentication is configured.
    pub fn anonymous() -> Caller {
        Caller {
            name: "".into(),
            admin: true,
            roles: Arc::default(),
        }
    }

    /// Whether this caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || *self.name == *owner
    }
}

/// A caller's roles, as its token or JWT gives them (see `--policy`).
pub type Roles = Arc<[Arc<str>]>;

/// The configured ways in: named tokens and, when set, JWTs; and the
/// policy, whose roles may make a caller an admin.
#[derive(Clone)]
pub struct Authenticator {
    pub tokens: TokenCheck,
    pub jwt: Option<JwtCheck>,
    pub policy: PolicyCheck,
}

impl Authenticator {
    /// Whether any credential is configured (and so authentication is on).
    pub fn enabled(&self) -> bool {
        self.tokens.enabled() || self.jwt.is_some()
    }

    /// The caller the `authorization` header names, an admin when its token
    /// or a policy role says so; UNAUTHENTICATED with what is wrong, never
    /// with the token.
    pub async fn verify(&self, header: Option<&[u8]>) -> Result<Caller> {
        let mut caller = self.identify(header).await?;
        caller.admin = caller.admin || self.policy.grants_admin(&caller);
        Ok(caller)
    }

    /// The roles `owner` has now, for work that runs without a token (a
    /// schedule's tick): the token file's, else those of its latest JWT.
    pub fn roles_of(&self, owner: &str) -> Roles {
        self.tokens
            .roles_of(owner)
            .or_else(|| self.jwt.as_ref().and_then(|jwt| jwt.roles_of(owner)))
            .unwrap_or_default()
    }

    async fn identify(&self, header: Option<&[u8]>) -> Result<Caller> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
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
        if let Some(caller) = self.tokens.find(presented) {
            return Ok(caller);
        }
        let caller = match &self.jwt {
            Some(jwt) if jwt::looks_like_jwt(presented) => jwt.verify(presented).await,
            _ => Err(Error::Unauthenticated("invalid token".into())),
        };
        let caller = caller.inspect_err(|e| debug!(reason = %e, "a bearer token was refused"))?;
        // Owners are one namespace: a subject that names a token's owner
        // would see, cancel and tick as that token's jobs and schedules.
        if self.tokens.roles_of(&caller.name).is_some() {
            debug!("a JWT whose owner names a --token or --token-file owner was refused");
            return Err(Error::Unauthenticated(
                "JWT refused: its owner claim names the owner of a --token or --token-file \
                 token, and owners may not be shared"
                    .into(),
            ));
        }
        Ok(caller)
    }
}

/// Wraps a gRPC service so that every call is authenticated first.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call (tower's rule).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Box::pin(async move {
            let header = request.headers().get(http::header::AUTHORIZATION);
            let caller = match auth.verify(header.map(|v| v.as_bytes())).await {
                Ok(caller) => caller,
                Err(e) => return Ok(Status::from(e).into_http()),
            };
            if let Some(notes) = request.extensions().get::<Arc<RpcNotes>>() {
                notes.owner(caller.name.clone());
            }
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

/// The caller a request was authenticated as.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(file: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, file).unwrap();
        Authenticator {
            tokens: TokenCheck::new(&["s3cret-admin".into()], Some(&path)).unwrap(),
            jwt: None,
            policy: PolicyCheck::default(),
        }
    }

    #[tokio::test]
    async fn a_bearer_header_names_the_caller() {
        let auth = authenticator("alice:alice-secret-1\n");
        let alice = auth.verify(Some(b"Bearer alice-secret-1")).await.unwrap();
        assert_eq!(&*alice.name, "alice");
        assert!(
            auth.verify(Some(b"bearer s3cret-admin"))
                .await
                .unwrap()
                .admin
        );
        for bad in [
            None,
            Some(&b"Bearer wrong-secret"[..]),
            Some(b"alice-secret-1"),
            Some(b"Bearer "),
            Some(b"Bearer a.b.c"),
        ] {
            let err = auth.verify(bad).await.unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
            assert!(!err.to_string().contains("secret-1"));
        }
    }

    #[tokio::test]
    async fn without_credentials_everyone_is_an_anonymous_admin() {
        let open = Authenticator {
            tokens: TokenCheck::new(&[], None).unwrap(),
            jwt: None,
            policy: PolicyCheck::default(),
        };
        assert!(!open.enabled());
        assert_eq!(open.verify(None).await.unwrap(), Caller::anonymous());
    }

    #[test]
    fn ownership() {
        let alice = Caller {
            name: "alice".into(),
            admin: false,
            roles: Arc::default(),
        };
        assert!(alice.may_see("alice"));
        assert!(!alice.may_see("bob"));
        assert!(Caller::anonymous().may_see("bob"));
    }
}
