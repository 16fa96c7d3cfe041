//! Access-token verification end to end: an attack table against a running node, JWKS
//! keys served by a real local HTTP server (with rotation and outage), anonymous viewers.

use streamedge_testkit as common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use base64::Engine;
use common::TestNode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "aud": "authenticated", "exp": now() + 600, "iat": now(),
           "app_metadata": {"role": "seller"}})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn es_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(fixture(&format!("{name}.pem")).as_bytes()).unwrap()
}

/// An ES256 token for `user` signed with the key `kid` under its own kid.
fn es256(kid: &str, user: &str) -> String {
    sign(Algorithm::ES256, Some(kid), &es_key(kid), &claims(user))
}

fn rs_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(&format!("{name}.pem")).as_bytes()).unwrap()
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

/// A JWKS host: serves whatever key set the test puts in `keys`, or 503 while `up` is false.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    up: Arc<Mutex<bool>>,
    hits: Arc<Mutex<u32>>,
}

async fn jwks_server(initial: Vec<Value>) -> JwksServer {
    let keys = Arc::new(Mutex::new(initial));
    let up = Arc::new(Mutex::new(true));
    let hits = Arc::new(Mutex::new(0u32));
    let (k, u, h) = (keys.clone(), up.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            let (k, u, h) = (k.clone(), u.clone(), h.clone());
            async move {
                *h.lock().unwrap() += 1;
                if !*u.lock().unwrap() {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down".to_string(),
                    );
                }
                let set = json!({"keys": *k.lock().unwrap()});
                (axum::http::StatusCode::OK, set.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url: format!("http://{addr}/auth/v1/.well-known/jwks.json"),
        keys,
        up,
        hits,
    }
}

async fn node_with_jwks(jwks: &JwksServer) -> TestNode {
    let mut cfg = common::test_config();
    cfg.auth.jwks_url = jwks.url.clone();
    cfg.auth.jwks_min_refresh = Duration::from_millis(200);
    TestNode::start(cfg).await
}

/// Calls an authenticated endpoint; returns (status, problem code).
async fn call(node: &TestNode, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(node.api_url("/v1/streams"))
        .json(&json!({"title": "attack"}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_string())
}

/// Tokens whose signature is good but whose content breaks the rules: a critical header
/// extension this verifier does not understand (RFC 7515), times out of any sane range,
/// `is_anonymous` that is not a boolean, a `sub` with hidden or reordering characters.
#[tokio::test]
async fn well_signed_tokens_with_unsound_content_are_refused() {
    let node = TestNode::start(common::test_config()).await;
    let secret = hs(common::TEST_JWT_SECRET);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let with = |k: &str, v: Value| {
        let mut c = claims("u1");
        c[k] = v;
        sign(Algorithm::HS256, None, &secret, &c)
    };
    let crit = {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"]})),
            b64(&claims("u1"))
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &secret, Algorithm::HS256).unwrap();
        format!("{input}.{sig}")
    };
    let table = [
        ("crit header", crit, "token_malformed"),
        (
            "exp 2^63",
            with("exp", json!(9_223_372_036_854_775_808u64)),
            "token_invalid_claim",
        ),
        (
            "iat negative",
            with("iat", json!(-5)),
            "token_invalid_claim",
        ),
        (
            "nbf a string",
            with("nbf", json!("soon")),
            "token_malformed",
        ),
        (
            "is_anonymous a string",
            with("is_anonymous", json!("true")),
            "token_invalid_claim",
        ),
        (
            "sub with an override",
            with("sub", json!("u\u{202E}1")),
            "token_invalid_claim",
        ),
        (
            "sub invisible only",
            with("sub", json!("\u{200B}")),
            "token_invalid_claim",
        ),
        (
            "sub a number",
            with("sub", json!(42)),
            "token_invalid_claim",
        ),
    ];
    for (name, token, want) in &table {
        let (status, code) = call(&node, Some(token)).await;
        assert_eq!((status, code.as_str()), (401, *want), "{name}");
    }
    // The same token with sound content is accepted.
    let (status, _) = call(&node, Some(&with("sub", json!("u-1")))).await;
    assert_eq!(status, 201);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn attack_table_every_bad_token_is_401_with_its_own_code() {
    let jwks = jwks_server(vec![jwk("es256-a"), jwk("rs256-a")]).await;
    let node = node_with_jwks(&jwks).await;
    let secret = hs(common::TEST_JWT_SECRET);
    let good = sign(Algorithm::HS256, None, &secret, &claims("u1"));

    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let mut expired = claims("u1");
    expired["exp"] = json!(now() - 120); // beyond the 30 s leeway
    let mut not_yet = claims("u1");
    not_yet["nbf"] = json!(now() + 600);
    let mut wrong_aud = claims("u1");
    wrong_aud["aud"] = json!("someone-else");
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("u1"))
    );
    // The public key used as an HMAC secret, naming the RSA key's kid.
    let confusion = sign(
        Algorithm::HS256,
        Some("rs256-a"),
        &hs(&fixture("rs256-a.pub.pem")),
        &claims("u1"),
    );

    let table: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "token_missing"),
        (
            "expired",
            Some(sign(Algorithm::HS256, None, &secret, &expired)),
            "token_expired",
        ),
        (
            "not yet valid",
            Some(sign(Algorithm::HS256, None, &secret, &not_yet)),
            "token_not_yet_valid",
        ),
        (
            "wrong audience",
            Some(sign(Algorithm::HS256, None, &secret, &wrong_aud)),
            "token_wrong_audience",
        ),
        (
            "wrong secret",
            Some(sign(
                Algorithm::HS256,
                None,
                &hs("another-secret-0123456789abcdefghijkl"),
                &claims("u1"),
            )),
            "token_bad_signature",
        ),
        ("alg none", Some(alg_none), "token_alg_not_allowed"),
        ("HS/RS confusion", Some(confusion), "token_alg_mismatch"),
        (
            "unknown kid",
            Some(sign(
                Algorithm::ES256,
                Some("no-such-key"),
                &es_key("es256-b"),
                &claims("u1"),
            )),
            "token_unknown_kid",
        ),
        (
            "truncated",
            Some(good[..good.len() - 7].to_string()),
            "token_truncated",
        ),
        (
            "garbage",
            Some("definitely not a token".into()),
            "token_malformed",
        ),
    ];
    let mut codes = HashSet::new();
    for (name, token, want) in &table {
        let (status, code) = call(&node, token.as_deref()).await;
        assert_eq!(status, 401, "{name}: got {status} {code}");
        assert_eq!(code, *want, "{name}");
        codes.insert(code);
    }
    assert_eq!(
        codes.len(),
        table.len(),
        "codes must be distinct: {codes:?}"
    );

    // None of them reached the handler: nothing was created.
    let list = common::get_json(&node.api_url("/v1/streams"), &good).await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 0);

    // And the valid ones pass: HS256, ES256 and RS256 from the JWKS.
    for token in [
        good.clone(),
        es256("es256-a", "u2"),
        sign(
            Algorithm::RS256,
            Some("rs256-a"),
            &rs_key("rs256-a"),
            &claims("u3"),
        ),
    ] {
        assert_eq!(call(&node, Some(&token)).await.0, 201);
    }
    // A token signed by one JWKS key but naming another is a bad signature.
    let swapped = sign(
        Algorithm::ES256,
        Some("es256-a"),
        &es_key("es256-b"),
        &claims("u4"),
    );
    assert_eq!(call(&node, Some(&swapped)).await.1, "token_bad_signature");
    // ES256 header with an RSA key's kid.
    let mismatch = sign(
        Algorithm::ES256,
        Some("rs256-a"),
        &es_key("es256-a"),
        &claims("u5"),
    );
    assert_eq!(call(&node, Some(&mismatch)).await.1, "token_alg_mismatch");
    // Other HMAC strengths are not accepted.
    let hs384 = sign(Algorithm::HS384, None, &secret, &claims("u6"));
    assert_eq!(call(&node, Some(&hs384)).await.1, "token_alg_not_allowed");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwks_rotation_and_outage() {
    let jwks = jwks_server(vec![jwk("es256-a")]).await;
    let node = node_with_jwks(&jwks).await;
    let token_a = es256("es256-a", "ua");
    let token_b = es256("es256-b", "ub");

    assert_eq!(call(&node, Some(&token_a)).await.0, 201);
    assert_eq!(call(&node, Some(&token_b)).await.1, "token_unknown_kid");

    // The project rotates in key b; an unknown kid triggers a refresh (after the backoff).
    jwks.keys.lock().unwrap().push(jwk("es256-b"));
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            call(&node, Some(&token_b)).await.0 == 201
        })
        .await,
        "rotated key never accepted"
    );

    // A flood of unknown kids does not hammer the JWKS host.
    let before = *jwks.hits.lock().unwrap();
    let forged = sign(
        Algorithm::ES256,
        Some("forged"),
        &es_key("es256-b"),
        &claims("x"),
    );
    let flood = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(call(&node, Some(&forged)).await.1, "token_unknown_kid");
    }
    // At most one fetch per `jwks_min_refresh` (200 ms) of the flood, and a first one.
    let allowed = 2 + flood.elapsed().as_millis() / 200;
    let fetched = (*jwks.hits.lock().unwrap() - before) as u128;
    assert!(
        fetched <= allowed,
        "50 forged kids in {:?} caused {fetched} JWKS fetches",
        flood.elapsed()
    );

    // The JWKS host goes down: cached keys keep working.
    *jwks.up.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&node, Some(&forged)).await.1, "token_unknown_kid");
    assert_eq!(call(&node, Some(&token_a)).await.0, 201);
    assert_eq!(call(&node, Some(&token_b)).await.0, 201);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwks_unreachable_from_the_start_is_503_not_401() {
    let jwks = jwks_server(vec![jwk("es256-a")]).await;
    *jwks.up.lock().unwrap() = false;
    let node = node_with_jwks(&jwks).await;
    let token_a = es256("es256-a", "ua");
    assert_eq!(
        call(&node, Some(&token_a)).await,
        (503, "auth_keys_unavailable".to_string())
    );
    // HS256 tokens do not depend on the JWKS.
    let hs_token = common::seller("s");
    assert_eq!(call(&node, Some(&hs_token)).await.0, 201);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn anonymous_viewers_only_when_allowed() {
    let anon = common::token_with(
        "anon-1",
        streamedge::auth::Role::Buyer,
        Duration::from_secs(600),
        true,
    );
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    let url = node.api_url(&format!("/v1/streams/{stream}"));
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "token_anonymous_not_allowed");
    node.shutdown().await.unwrap();

    let mut cfg = common::test_config();
    cfg.auth.allow_anonymous_viewers = true;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await;
    let (status, _) = common::get(&node.api_url(&format!("/v1/streams/{stream}")), &anon).await;
    assert_eq!(status, 200);
    // An anonymous viewer never sells, whatever its claims say.
    let anon_seller = common::token_with(
        "anon-2",
        streamedge::auth::Role::Seller,
        Duration::from_secs(600),
        true,
    );
    assert_eq!(
        call(&node, Some(&anon_seller)).await,
        (403, "seller_required".into())
    );
    node.shutdown().await.unwrap();
}
