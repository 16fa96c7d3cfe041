//! Token hot paths: building an AccessToken2 (HMAC + compression + base64), verifying
//! one, and verifying a Supabase HS256 access token (the whole verifier, and its HS256
//! step two ways: the hand-written path against `jsonwebtoken::decode`).
//!
//! `cargo bench --bench tokens`

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use streamedge::auth::dev::{mint, MintRequest, DEV_AGORA_APP_CERTIFICATE, DEV_AGORA_APP_ID};
use streamedge::auth::hs256::{self, ClaimRules, Hs256Key};
use streamedge::auth::{Role, Verifier, VerifierSettings};
use streamedge::rtc::accesstoken2::{verify, RtcRole, RtcTokenRequest, RtcUser};

fn request(role: RtcRole) -> RtcTokenRequest<'static> {
    RtcTokenRequest {
        app_id: DEV_AGORA_APP_ID,
        channel_name: "6f1c8e0e-62a8-4b6f-9f0e-2a4a1f7f1c11",
        user: RtcUser::Uid(3_094_162_587),
        role,
        token_expire: 3600,
        privilege_expire: 3600,
        issue_ts: 1_800_000_000,
        salt: 44_368_374,
    }
}

fn tokens(c: &mut Criterion) {
    let publisher = request(RtcRole::Publisher);
    let subscriber = request(RtcRole::Subscriber);
    c.bench_function("accesstoken2_build_publisher", |b| {
        b.iter(|| {
            black_box(&publisher)
                .build(DEV_AGORA_APP_CERTIFICATE)
                .unwrap()
        })
    });
    c.bench_function("accesstoken2_build_subscriber", |b| {
        b.iter(|| {
            black_box(&subscriber)
                .build(DEV_AGORA_APP_CERTIFICATE)
                .unwrap()
        })
    });
    let token = publisher.build(DEV_AGORA_APP_CERTIFICATE).unwrap();
    c.bench_function("accesstoken2_verify", |b| {
        b.iter(|| verify(black_box(&token), DEV_AGORA_APP_CERTIFICATE).unwrap())
    });

    let secret = b"streamedge-bench-secret-0123456789abcdef";
    let jwt = mint(
        secret,
        &MintRequest {
            user_id: "6c1f3c1e-2b7a-4a8e-9d51-3f1a2b3c4d5e",
            role: Role::Buyer,
            ttl: Duration::from_secs(3600),
            audience: "authenticated",
            issuer: "",
            role_claim: "app_metadata.role",
            anonymous: false,
        },
        jsonwebtoken::get_current_timestamp(),
    );
    let verifier = Verifier::new(
        Some(secret),
        None,
        VerifierSettings {
            audience: Some("authenticated".into()),
            issuer: None,
            leeway: Duration::from_secs(30),
            role_claim: "app_metadata.role".into(),
            allow_anonymous: false,
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("supabase_jwt_verify_hs256", |b| {
        b.iter(|| rt.block_on(verifier.verify(black_box(&jwt))).unwrap())
    });

    // The step that differs between the two ways of checking an HS256 token, after the
    // verifier has read the header (which it does either way, to pick the key family):
    // signature, payload and registered claims, ending with the claims as JSON.
    let rules = ClaimRules {
        audience: Some("authenticated".into()),
        issuer: None,
        leeway_secs: 30,
    };
    let key = Hs256Key::new(secret);
    let decoding_key = DecodingKey::from_secret(secret);
    let validation = hs256::validation(Algorithm::HS256, &rules);
    let mut group = c.benchmark_group("hs256_signature_and_claims");
    group.bench_function("hand_written", |b| {
        b.iter(|| {
            let jwt = black_box(jwt.as_str());
            let (signing_input, sig) = jwt.rsplit_once('.').unwrap();
            let payload = signing_input.split_once('.').unwrap().1;
            let signature = URL_SAFE_NO_PAD.decode(sig).unwrap();
            assert!(key.verify(signing_input.as_bytes(), &signature));
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            hs256::validate(&claims, &rules, jsonwebtoken::get_current_timestamp()).unwrap();
            claims
        })
    });
    group.bench_function("jsonwebtoken_decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Value>(black_box(jwt.as_str()), &decoding_key, &validation)
                .unwrap()
                .claims
        })
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
