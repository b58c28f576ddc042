//! JWT bearer tokens from an identity provider (Keycloak, Entra ID, Okta).
//!
//! Keys come from a JWKS document: `--jwt-jwks FILE` (read again on SIGHUP)
//! or `--jwt-jwks-url URL` (fetched at start, every `--jwt-jwks-refresh`,
//! and at once when a token names a key id the set does not hold, at most
//! once per [`REFETCH_COOLDOWN`]). Verification is `jsonwebtoken`'s, set up
//! strictly: only the asymmetric algorithms below (never `none`, never HMAC:
//! a public key is not a shared secret), `exp` required, `nbf` checked, and
//! `iss`/`aud` required as soon as they are configured, since the crate's
//! defaults accept a token that lacks them. Every refusal is
//! UNAUTHENTICATED and says which check failed, never what the token holds.
//!
//! The caller's name is the `--jwt-owner-claim` (default `sub`); its roles
//! are the `--jwt-roles-claim`, a dotted path (`realm_access.roles` for
//! Keycloak) to an array of strings, or to one space-separated string.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value as Json;
use tracing::{info, warn};

use super::tokens::is_role_name;
use super::{Caller, Roles};
use crate::error::{Error, Result};

/// The algorithms a token may be signed with.
const ACCEPTED: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The least time between two fetches of the key set that an unknown key id
/// triggers, so that made-up key ids cannot make procgate hammer the
/// identity provider.
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

/// How the tokens are checked (from the `--jwt-*` flags).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub source: KeySource,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub owner_claim: String,
    pub roles_claim: String,
}

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            KeySource::File(path) => format!("--jwt-jwks {}", path.display()),
            KeySource::Url(url) => format!("--jwt-jwks-url {url}"),
        }
    }
}

/// One verification key of the set.
struct Key {
    key: DecodingKey,
    /// The JWK's own `alg`, when it names one: then only that is accepted.
    algorithm: Option<Algorithm>,
}

/// The key set as last read, by key id (`""` for a key without one).
#[derive(Default)]
struct Keys {
    by_id: HashMap<String, Arc<Key>>,
}

/// Verifies JWTs; cheap to clone, shared with the refresher and SIGHUP.
#[derive(Clone)]
pub struct JwtCheck {
    settings: Arc<JwtSettings>,
    keys: Arc<RwLock<Arc<Keys>>>,
    /// When the key set was last fetched for an unknown key id; one such
    /// fetch runs at a time.
    last_refetch: Arc<tokio::sync::Mutex<Option<Instant>>>,
    /// The roles each owner's latest token carried, for the schedules they
    /// own, which run when no token is at hand (bounded).
    seen_roles: Arc<RwLock<HashMap<Arc<str>, Roles>>>,
}

/// How many owners' roles are remembered for their schedules.
const MAX_SEEN_OWNERS: usize = 10_000;

impl JwtCheck {
    /// Reads or fetches the key set now: a set that cannot be had stops
    /// the start.
    pub async fn new(settings: JwtSettings) -> Result<Self> {
        let check = Self {
            settings: Arc::new(settings),
            keys: Arc::default(),
            last_refetch: Arc::default(),
            seen_roles: Arc::default(),
        };
        let count = check.reload().await?;
        info!(keys = count, source = %check.settings.source.describe(), "JWT verification keys loaded");
        Ok(check)
    }

    /// Reads the key set again; on error the previous keys stay.
    pub async fn reload(&self) -> Result<usize> {
        let text = match &self.settings.source {
            KeySource::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| {
                Error::InvalidArgument(format!("cannot read --jwt-jwks {}: {e}", path.display()))
            })?,
            KeySource::Url(url) => super::fetch::get(url).await.map_err(|e| {
                Error::Unavailable(format!("cannot fetch --jwt-jwks-url {url}: {e}"))
            })?,
        };
        let keys = parse_key_set(&text).map_err(|e| {
            Error::InvalidArgument(format!("{}: {e}", self.settings.source.describe()))
        })?;
        let count = keys.by_id.len();
        *self.keys.write().expect("jwks lock") = Arc::new(keys);
        Ok(count)
    }

    /// Fetches the key set every `every` (for `--jwt-jwks-url`).
    pub async fn refresh_every(self, every: Duration) {
        if !matches!(self.settings.source, KeySource::Url(_)) {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = self.reload().await {
                warn!(error = %e, "refreshing the JWT key set failed; the previous keys stay");
            }
        }
    }

    /// The caller a token names, once every check passed.
    pub async fn verify(&self, token: &[u8]) -> Result<Caller> {
        let refused = |why: &str| Error::Unauthenticated(format!("JWT refused: {why}"));
        let token = std::str::from_utf8(token).map_err(|_| refused("it is not text"))?;
        // The algorithm is read first, so that `none` (which the crate
        // cannot even parse) is refused by name.
        let alg = header_alg(token).ok_or_else(|| refused("its header is not valid"))?;
        if !ACCEPTED.iter().any(|a| format!("{a:?}") == alg) {
            return Err(refused(&format!(
                "its algorithm {} is not accepted (only RS256, RS384, RS512, PS256, ES256, \
                 ES384 and EdDSA are; never none or HMAC)",
                shown(&alg)
            )));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refused("its header is not valid"))?;
        let kid = header.kid.unwrap_or_default();
        let key = match self.key(&kid) {
            Some(key) => key,
            None => self.refetch_for(&kid).await.ok_or_else(|| {
                refused(if kid.is_empty() {
                    "it names no key id (kid), and the key set holds more than one key"
                } else {
                    "its key id (kid) is not in the key set"
                })
            })?,
        };
        if key.algorithm.is_some_and(|alg| alg != header.alg) {
            return Err(refused("its algorithm is not the one its key is for"));
        }
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Json>>(
            token,
            &key.key,
            &self.validation(header.alg),
        )
        .map_err(|e| match e.kind() {
            // The crate reads a NumericDate as whole seconds only, and
            // takes any other as missing.
            ErrorKind::MissingRequiredClaim(name) if name == "exp" && has_claim(token, "exp") => {
                refused("its expiry (exp) is not a whole, non-negative number of seconds")
            }
            kind => refused(why_refused(kind)),
        })?
        .claims;
        let caller = self.caller(&claims).map_err(|why| refused(&why))?;
        self.remember(&caller);
        Ok(caller)
    }

    fn remember(&self, caller: &Caller) {
        let mut seen = self.seen_roles.write().expect("roles lock");
        if seen.get(&caller.name) != Some(&caller.roles) {
            if seen.len() >= MAX_SEEN_OWNERS {
                seen.clear();
            }
            seen.insert(caller.name.clone(), caller.roles.clone());
        }
    }

    /// The roles the latest token of `owner` carried, since this process
    /// started.
    pub fn roles_of(&self, owner: &str) -> Option<Roles> {
        self.seen_roles
            .read()
            .expect("roles lock")
            .get(owner)
            .cloned()
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let settings = &self.settings;
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if settings.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn key(&self, kid: &str) -> Option<Arc<Key>> {
        let keys = self.keys.read().expect("jwks lock").clone();
        match keys.by_id.get(kid) {
            Some(key) => Some(key.clone()),
            // A token without a kid is fine when the set holds one key.
            None if kid.is_empty() && keys.by_id.len() == 1 => keys.by_id.values().next().cloned(),
            None => None,
        }
    }

    /// Fetches the key set again for a key id it lacks, unless the last
    /// such fetch is more recent than the cooldown.
    async fn refetch_for(&self, kid: &str) -> Option<Arc<Key>> {
        if !matches!(self.settings.source, KeySource::Url(_)) {
            return None;
        }
        let mut last = self.last_refetch.lock().await;
        // Another caller may have fetched it while this one waited.
        if let Some(key) = self.key(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < REFETCH_COOLDOWN) {
            return None;
        }
        *last = Some(Instant::now());
        match self.reload().await {
            Ok(count) => info!(
                keys = count,
                "fetched the JWT key set again for an unknown key id"
            ),
            Err(e) => warn!(error = %e, "fetching the JWT key set for an unknown key id failed"),
        }
        self.key(kid)
    }

    /// The caller from verified claims.
    fn caller(
        &self,
        claims: &serde_json::Map<String, Json>,
    ) -> std::result::Result<Caller, String> {
        let owner_claim = &self.settings.owner_claim;
        let name = match claim(claims, owner_claim) {
            Some(Json::String(name)) if !name.is_empty() && name.len() <= MAX_OWNER_BYTES => {
                name.as_str()
            }
            Some(Json::String(name)) if !name.is_empty() => {
                return Err(format!(
                    "its `{owner_claim}` claim is longer than the {MAX_OWNER_BYTES} bytes an \
                     owner may have (--jwt-owner-claim)"
                ));
            }
            _ => {
                return Err(format!(
                    "it has no `{owner_claim}` claim naming its owner (--jwt-owner-claim)"
                ));
            }
        };
        let roles_claim = &self.settings.roles_claim;
        let roles: Vec<Arc<str>> = match claim(claims, roles_claim) {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(Json::as_str)
                .filter(|r| is_role_name(r))
                .map(Arc::from)
                .collect(),
            Some(Json::String(text)) => text
                .split_whitespace()
                .filter(|r| is_role_name(r))
                .map(Arc::from)
                .collect(),
            Some(_) => {
                return Err(format!(
                    "its `{roles_claim}` claim is not a list of roles (--jwt-roles-claim)"
                ));
            }
        };
        Ok(Caller {
            name: name.into(),
            admin: false,
            roles: roles.into(),
        })
    }
}

/// The claim at a dotted path (`realm_access.roles`); a claim whose own
/// name holds the dots is found too.
fn claim<'a>(claims: &'a serde_json::Map<String, Json>, path: &str) -> Option<&'a Json> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let (head, rest) = path.split_once('.')?;
    match claims.get(head)? {
        Json::Object(inner) => claim(inner, rest),
        _ => None,
    }
}

/// The `alg` of a token's header, as written.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let header: serde_json::Map<String, Json> = serde_json::from_slice(&json).ok()?;
    Some(header.get("alg")?.as_str()?.to_string())
}

/// An algorithm name from a token, safe to put in a message: the known
/// names only, never what a client made up.
fn shown(alg: &str) -> &str {
    const NAMED: [&str; 6] = ["none", "HS256", "HS384", "HS512", "PS384", "PS512"];
    NAMED
        .into_iter()
        .find(|n| n.eq_ignore_ascii_case(alg))
        .unwrap_or("(unknown)")
}

/// What failed, in words a caller can act on and without the token.
/// The most bytes of an owner: it names jobs and schedules, and shows in
/// logs and listings.
const MAX_OWNER_BYTES: usize = 256;

/// Whether the token's payload holds the claim `name` at all.
fn has_claim(token: &str, name: &str) -> bool {
    use base64::Engine as _;
    token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Map<String, Json>>(&json).ok())
        .is_some_and(|claims| claims.contains_key(name))
}

fn why_refused(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "it has expired (exp)",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "its issuer (iss) is not --jwt-issuer",
        ErrorKind::InvalidAudience => "its audience (aud) is not one of --jwt-audience",
        ErrorKind::InvalidSignature => "its signature does not verify",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "it has no expiry (exp)",
            "iss" => "it has no issuer (iss), and --jwt-issuer is set",
            "aud" => "it has no audience (aud), and --jwt-audience is set",
            _ => "it lacks a required claim",
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "its algorithm does not match its key"
        }
        ErrorKind::InvalidKeyFormat | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey => {
            "its key in the key set is not usable"
        }
        _ => "it is not a well-formed JWT",
    }
}

/// Whether a bearer value has a JWT's shape: three base64url parts.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.iter().filter(|&&b| b == b'.').count() == 2
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// The usable keys of a JWKS document (`{"keys": [...]}`).
fn parse_key_set(text: &str) -> std::result::Result<Keys, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Keys::default();
    for jwk in &set.keys {
        // Encryption keys do not verify signatures; a shared secret (`oct`)
        // is never a key here.
        if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            || matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            )
        {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            Some(alg) => match alg.to_string().parse::<Algorithm>().ok() {
                Some(alg) if ACCEPTED.contains(&alg) => Some(alg),
                // An HMAC or unknown key is never used.
                _ => continue,
            },
            None => None,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "key {:?} is not usable: {e}",
                jwk.common.key_id.as_deref().unwrap_or("")
            )
        })?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.by_id.insert(kid, Arc::new(Key { key, algorithm }));
    }
    if keys.by_id.is_empty() {
        return Err("it holds no signature key".into());
    }
    Ok(keys)
}
