//! `POST /v1/streams/{id}/rtc-token`: tokens decoded and verified here independently of
//! the node's encoder, refusals (banned, ended, unknown, unauthenticated), and rate limits
//! that hold across two node processes sharing one Redis.

use streamedge_testkit as common;

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use common::{NodeProcess, TestNode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use streamedge::auth::dev::{DEV_AGORA_APP_CERTIFICATE, DEV_AGORA_APP_ID};

/// An AccessToken2 read by hand: "007" + base64(zlib(signature ‖ signing info)).
#[derive(Debug)]
struct Decoded {
    app_id: String,
    issue_ts: u32,
    expire: u32,
    channel: String,
    uid: String,
    privileges: BTreeMap<u16, u32>,
    signature_ok: bool,
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u16(&mut self) -> u16 {
        let v = u16::from_le_bytes([self.0[0], self.0[1]]);
        self.0 = &self.0[2..];
        v
    }
    fn u32(&mut self) -> u32 {
        let v = u32::from_le_bytes(self.0[..4].try_into().unwrap());
        self.0 = &self.0[4..];
        v
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u16() as usize;
        let v = self.0[..n].to_vec();
        self.0 = &self.0[n..];
        v
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn decode(token: &str, certificate: &str) -> Decoded {
    let b64 = token.strip_prefix("007").expect("007 prefix");
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut content = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut content)
        .unwrap();
    let mut c = Cursor(&content);
    let signature = c.bytes();
    let signed = c.0;
    let app_id = String::from_utf8(c.bytes()).unwrap();
    let issue_ts = c.u32();
    let expire = c.u32();
    let salt = c.u32();
    let services = c.u16();
    assert_eq!(services, 1, "one RTC service");
    assert_eq!(c.u16(), 1, "service type 1 = RTC");
    let mut privileges = BTreeMap::new();
    for _ in 0..c.u16() {
        let k = c.u16();
        let v = c.u32();
        privileges.insert(k, v);
    }
    let channel = String::from_utf8(c.bytes()).unwrap();
    let uid = String::from_utf8(c.bytes()).unwrap();
    assert!(c.0.is_empty(), "trailing bytes");
    let key = hmac(
        &salt.to_le_bytes(),
        &hmac(&issue_ts.to_le_bytes(), certificate.as_bytes()),
    );
    Decoded {
        app_id,
        issue_ts,
        expire,
        channel,
        uid,
        privileges,
        signature_ok: hmac(&key, signed) == signature,
    }
}

async fn rtc_token(
    api: &str,
    stream: &str,
    token: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams/{stream}/rtc-token"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn seller_gets_publisher_privileges_and_buyers_join_only() {
    let mut cfg = common::test_config();
    cfg.media.enabled = true;
    cfg.media.node_key = streamedge::config::Secret::new("media-key-for-tests-0123456789abcdef");
    let node = TestNode::start(cfg).await;
    let api = format!("http://{}", node.api);
    let stream = node.new_stream().await.to_string();
    let before = jsonwebtoken::get_current_timestamp() as u32;

    let (s, seller, _) = rtc_token(&api, &stream, &common::seller("seller-1")).await;
    assert_eq!(s, 200, "{seller}");
    let (s, buyer, _) = rtc_token(&api, &stream, &common::buyer("buyer-7")).await;
    assert_eq!(s, 200, "{buyer}");

    for (resp, role, privileges) in [
        (&seller, "publisher", vec![1u16, 2, 3, 4]),
        (&buyer, "subscriber", vec![1u16]),
    ] {
        assert_eq!(resp["role"], role);
        assert_eq!(resp["app_id"], DEV_AGORA_APP_ID);
        assert_eq!(resp["channel"], stream);
        let d = decode(resp["token"].as_str().unwrap(), DEV_AGORA_APP_CERTIFICATE);
        assert!(
            d.signature_ok,
            "signature must verify with the app certificate"
        );
        assert_eq!(d.app_id, DEV_AGORA_APP_ID);
        assert_eq!(d.channel, stream);
        assert_eq!(d.uid, resp["uid"].as_u64().unwrap().to_string());
        assert_eq!(d.privileges.keys().copied().collect::<Vec<_>>(), privileges);
        // Expiries are seconds relative to issue time, not timestamps.
        assert_eq!(d.expire, 3600);
        assert!(d.privileges.values().all(|e| *e == 3600));
        assert!(d.issue_ts >= before && d.issue_ts <= before + 5);
        assert!(resp["media_token"].as_str().is_some());
        // A wrong certificate does not verify.
        assert!(
            !decode(
                resp["token"].as_str().unwrap(),
                "00000000000000000000000000000000"
            )
            .signature_ok
        );
    }
    // The uid is stable per user and differs between users.
    let (_, again, _) = rtc_token(&api, &stream, &common::buyer("buyer-7")).await;
    assert_eq!(again["uid"], buyer["uid"]);
    assert_ne!(seller["uid"], buyer["uid"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn refusals_have_clear_codes() {
    // A Redis-backed node, so the test can write moderation state the way another node
    // (or the moderation capability) would.
    let cfg = common::redis_test_config();
    let prefix = cfg.redis.key_prefix.clone();
    let node = TestNode::start(cfg.clone()).await;
    let api = format!("http://{}", node.api);
    let stream = node.new_stream().await;
    let s = stream.to_string();
    let buyer = common::buyer("buyer-1");

    let store = {
        let mut r = cfg.redis.clone();
        r.key_prefix = prefix;
        streamedge::store::redis::RedisStore::connect(&r)
            .await
            .unwrap()
    };
    use streamedge::store::{KeyValue, SharedState};
    store
        .set(
            &streamedge::domain::keys::ban(&stream, "buyer-1"),
            b"1",
            None,
        )
        .await
        .unwrap();
    let (st, body, _) = rtc_token(&api, &s, &buyer).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("banned")));
    // Others are unaffected.
    assert_eq!(rtc_token(&api, &s, &common::buyer("buyer-2")).await.0, 200);

    // End the stream (as the lifecycle would) and ask again.
    let key = streamedge::domain::keys::stream_record(&stream);
    let mut rec: Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
    rec["state"] = "ended".into();
    store
        .set(&key, rec.to_string().as_bytes(), None)
        .await
        .unwrap();
    let (st, body, _) = rtc_token(&api, &s, &common::buyer("buyer-2")).await;
    assert_eq!((st, body["code"].as_str()), (409, Some("stream_ended")));

    for (path_id, token, status, code) in [
        (
            uuid::Uuid::new_v4().to_string(),
            buyer.clone(),
            404,
            "stream_not_found",
        ),
        (
            "not-a-uuid".to_string(),
            buyer.clone(),
            400,
            "invalid_stream_id",
        ),
        (s.clone(), "garbage".to_string(), 401, "token_malformed"),
    ] {
        let (st, body, _) = rtc_token(&api, &path_id, &token).await;
        assert_eq!((st, body["code"].as_str().unwrap_or("")), (status, code));
    }
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams/{s}/rtc-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    store.close().await;
    node.shutdown().await.unwrap();

    // A node without Agora credentials says so.
    let mut cfg = common::test_config();
    cfg.agora = Default::default();
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let (st, body, headers) = rtc_token(
        &format!("http://{}", node.api),
        &stream,
        &common::buyer("b"),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("rtc_not_configured"))
    );
    assert!(headers.get("retry-after").is_none());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_two_nodes_sharing_redis() {
    let prefix = common::test_config().redis.key_prefix;
    let env = vec![
        ("STREAMEDGE_REDIS__URL", common::redis_url()),
        ("STREAMEDGE_REDIS__KEY_PREFIX", prefix),
        ("STREAMEDGE_AGORA__APP_ID", DEV_AGORA_APP_ID.to_string()),
        (
            "STREAMEDGE_AGORA__APP_CERTIFICATE",
            DEV_AGORA_APP_CERTIFICATE.to_string(),
        ),
        // 4 at once, then one per 100 s: nothing refills during the test.
        (
            "STREAMEDGE_RATE_LIMIT__RTC_TOKEN__USER_PER_SEC",
            "0.01".to_string(),
        ),
        (
            "STREAMEDGE_RATE_LIMIT__RTC_TOKEN__USER_BURST",
            "4".to_string(),
        ),
    ];
    let a = NodeProcess::spawn(&env);
    let b = NodeProcess::spawn(&env);
    let stream = common::create_stream(&a.api_url("/v1/streams"), &common::seller("s")).await;
    let s = stream.to_string();
    let buyer = common::buyer("greedy");
    let mut ok = 0;
    let mut limited = Vec::new();
    for i in 0..10 {
        let api = if i % 2 == 0 {
            a.api_url("")
        } else {
            b.api_url("")
        };
        let (st, body, headers) = rtc_token(&api, &s, &buyer).await;
        match st {
            200 => ok += 1,
            429 => {
                assert_eq!(body["code"], "rate_limited");
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=100).contains(&retry), "Retry-After {retry}");
                limited.push(i);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 4, "the burst is shared by both nodes");
    assert_eq!(limited, vec![4, 5, 6, 7, 8, 9]);
    // Another user has their own budget, on either node.
    let (st, _, _) = rtc_token(&b.api_url(""), &s, &common::buyer("patient")).await;
    assert_eq!(st, 200);
}
