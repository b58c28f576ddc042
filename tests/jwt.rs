//! JWT bearer tokens, signed by a real JWT library: tests/python/jwt_issuer.py
//! (PyJWT, installed by scripts/setup-python.sh) makes RSA, EC and Ed25519
//! key pairs, their JWKS, and tokens valid and not, forged ones included.
//! The gateway reads the keys from a file (then SIGHUP) or from a URL served
//! here, through a rotation to a new key id.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use procgate::proto::value::Kind;
use serde_json::Value as Json;
use tonic::Code;

const ISSUER: &str = "https://idp.example/realms/acme";
const AUDIENCE: &str = "procgate";

/// The keys and tokens of one issuer run.
struct Issued {
    jwks: String,
    jwks_rotated: String,
    tokens: Json,
}

impl Issued {
    fn token(&self, case: &str) -> &str {
        self.tokens[case]
            .as_str()
            .unwrap_or_else(|| panic!("no token {case}"))
    }
}

async fn issue() -> Issued {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(project_python())
            .args(["tests/python/jwt_issuer.py", ISSUER, AUDIENCE])
            .output()
            .expect("running tests/python/jwt_issuer.py")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "jwt_issuer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Json = serde_json::from_slice(&out.stdout).unwrap();
    Issued {
        jwks: all["jwks"].to_string(),
        jwks_rotated: all["jwks_rotated"].to_string(),
        tokens: all["tokens"].clone(),
    }
}

/// Submits a quick job as `token`: its owner, or the refusal.
async fn owner_as(client: &mut Client, token: &str) -> Result<String, tonic::Status> {
    let request = procgate::proto::SubmitAsyncRequest {
        call: Some(call("nap", vec![p_in("seconds", Kind::FloatValue(0.0))])),
        ..Default::default()
    };
    Ok(client
        .submit_async(as_user(request, token))
        .await?
        .into_inner()
        .owner)
}

/// A refusal: UNAUTHENTICATED, saying `why`, holding nothing of the token.
fn assert_refused(result: Result<String, tonic::Status>, why: &str, token: &str) {
    let status = result.expect_err(why);
    assert_eq!(status.code(), Code::Unauthenticated, "{why}: {status:?}");
    assert!(
        status.message().contains(why),
        "expected {why:?} in {:?}",
        status.message()
    );
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(
            !status.message().contains(part),
            "the message holds the token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_of_a_jwt_refuses_what_it_should() {
    let issued = issue().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &issued.jwks).unwrap();
    // Named tokens beside JWTs; erin's also names a JWT subject.
    let (_tokens_dir, tokens) = token_file("tess:tess-secret-1\nerin:erin-secret-1\n");
    let gw = Gateway::start(&[
        "--jwt-jwks",
        jwks.to_str().unwrap(),
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        "another-app",
        "--jwt-audience",
        AUDIENCE,
        "--token-file",
        &tokens,
    ])
    .await;
    let mut client = gw.client().await;

    for (case, owner) in [
        ("valid", "alice"),
        ("valid_ps256", "alice"),
        ("valid_ec", "bob"),
        ("valid_ed", "carol"),
        ("within_leeway", "alice"),
    ] {
        let got = owner_as(&mut client, issued.token(case)).await;
        assert_eq!(
            got.as_deref().map_err(|s| s.message().to_string()),
            Ok(owner),
            "{case}"
        );
    }
    // Named tokens work beside JWTs, and owners are one namespace: a JWT
    // subject that names a token's owner is refused.
    assert_eq!(
        owner_as(&mut client, "tess-secret-1").await.unwrap(),
        "tess"
    );
    let nested = issued.token("nested_roles");
    assert_refused(
        owner_as(&mut client, nested).await,
        "its owner claim names the owner of a --token or --token-file token",
        nested,
    );

    for (case, why) in [
        ("expired", "it has expired (exp)"),
        ("not_yet", "it is not valid yet (nbf)"),
        (
            "wrong_aud",
            "its audience (aud) is not one of --jwt-audience",
        ),
        ("wrong_iss", "its issuer (iss) is not --jwt-issuer"),
        ("no_aud", "it has no audience (aud)"),
        ("no_iss", "it has no issuer (iss)"),
        ("no_exp", "it has no expiry (exp)"),
        ("no_sub", "it has no `sub` claim"),
        (
            "fractional_exp",
            "its expiry (exp) is not a whole, non-negative number of seconds",
        ),
        (
            "negative_exp",
            "its expiry (exp) is not a whole, non-negative number of seconds",
        ),
        ("long_sub", "its `sub` claim is longer than the 256 bytes"),
        ("bad_signature", "its signature does not verify"),
        ("alg_none", "its algorithm none is not accepted"),
        ("hs256_public_key", "its algorithm HS256 is not accepted"),
        (
            "alg_not_the_keys",
            "its algorithm is not the one its key is for",
        ),
        ("unknown_kid", "its key id (kid) is not in the key set"),
        ("rotated", "its key id (kid) is not in the key set"),
    ] {
        let token = issued.token(case);
        assert_refused(owner_as(&mut client, token).await, why, token);
    }
    assert_refused(
        owner_as(&mut client, "not.a.jwt").await,
        "its header is not valid",
        "",
    );

    // SIGHUP reads the key file again: the new key is trusted; a broken
    // file keeps the keys there were.
    std::fs::write(&jwks, &issued.jwks_rotated).unwrap();
    // SAFETY: signalling this very process, whose gateway handles SIGHUP.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let rotated = issued.token("rotated");
    eventually(
        Duration::from_secs(10),
        "the rotated key to be trusted",
        || {
            let mut client = client.clone();
            async move { owner_as(&mut client, rotated).await.ok() }
        },
    )
    .await;
    std::fs::write(&jwks, "{not json").unwrap();
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owner_as(&mut client, rotated).await.unwrap(), "dave");
}

/// A JWKS endpoint as an identity provider serves it, counting its fetches.
struct KeyServer {
    url: String,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn key_server(jwks: &str) -> KeyServer {
    let served = Arc::new(Mutex::new(jwks.to_string()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (body, count) = (served.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/realms/acme/protocol/openid-connect/certs",
        axum::routing::get(move || {
            let (body, count) = (body.clone(), count.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                ([(http::header::CONTENT_TYPE, "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/realms/acme/protocol/openid-connect/certs",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyServer {
        url,
        jwks: served,
        fetches,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_again_for_a_new_key_id_at_most_once_per_30s() {
    let issued = issue().await;
    let keys = key_server(&issued.jwks).await;
    let gw = Gateway::start(&[
        "--jwt-jwks-url",
        &keys.url,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-roles-claim",
        "realm_access.roles",
    ])
    .await;
    let mut client = gw.client().await;
    assert_eq!(
        owner_as(&mut client, issued.token("valid")).await.unwrap(),
        "alice"
    );
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(
        owner_as(&mut client, issued.token("nested_roles"))
            .await
            .unwrap(),
        "erin"
    );
    assert_eq!(
        keys.fetches.load(Ordering::SeqCst),
        1,
        "known keys need no fetch"
    );

    // The provider rotates: a token with the new kid makes procgate fetch
    // the set again, at once, and it is accepted on its first try.
    *keys.jwks.lock().unwrap() = issued.jwks_rotated.clone();
    assert_eq!(
        owner_as(&mut client, issued.token("rotated"))
            .await
            .unwrap(),
        "dave"
    );
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);

    // Made-up key ids within 30 s fetch nothing more.
    let unknown = issued.token("unknown_kid");
    for _ in 0..5 {
        assert_refused(
            owner_as(&mut client, unknown).await,
            "its key id (kid) is not in the key set",
            unknown,
        );
    }
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2, "one fetch per 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_that_cannot_be_had_stops_the_start() {
    let db = start_db().await;
    for (flags, says) in [
        (
            vec!["--jwt-jwks-url", "http://127.0.0.1:9/certs"],
            "cannot fetch --jwt-jwks-url http://127.0.0.1:9/certs",
        ),
        (
            vec!["--jwt-jwks", "/nonexistent/jwks.json"],
            "cannot read --jwt-jwks",
        ),
        (
            vec!["--jwt-issuer", ISSUER],
            "--jwt-issuer and --jwt-audience need the keys",
        ),
    ] {
        let logs = refused_start(&db.url(), &flags).await;
        assert!(logs.contains(says), "{says:?} not in {logs}");
    }
}

/// A JWT's roles claim gives its roles under `--policy`, as a token file's
/// do: alice's `etl` may nap, bob's `reports` is denied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwts_roles_are_what_the_policy_checks() {
    let issued = issue().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &issued.jwks).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[roles.etl]\nallow = [\"nap\"]\n[roles.reports]\nallow = [\"*\"]\ndeny = [\"nap\"]\n",
    )
    .unwrap();
    let gw = Gateway::start(&[
        "--jwt-jwks",
        jwks.to_str().unwrap(),
        "--jwt-audience",
        AUDIENCE,
        "--policy",
        policy.to_str().unwrap(),
    ])
    .await;
    let mut client = gw.client().await;
    assert_eq!(
        owner_as(&mut client, issued.token("valid")).await.unwrap(),
        "alice"
    );
    let denied = owner_as(&mut client, issued.token("valid_ec"))
        .await
        .expect_err("bob's role denies it");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("procedure nap: no role of this caller allows it"),
        "{}",
        denied.message()
    );
}
