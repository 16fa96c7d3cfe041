//! Finding the access token on a request (verifying it is [`super::Verifier`]'s job; the
//! extractors that do both are in `http/extract.rs`).
//!
//! HTTP endpoints take `Authorization: Bearer <token>` only. WebSocket upgrades (browsers
//! cannot set headers on them) also accept the token as the `access_token` query
//! parameter or as a `Sec-WebSocket-Protocol` entry `access_token.<token>` next to
//! `streamedge.v1`.

use axum::http::HeaderMap;

use super::jwt::AuthError;

/// Prefix of a `Sec-WebSocket-Protocol` entry carrying the token.
pub const WS_PROTOCOL_TOKEN_PREFIX: &str = "access_token.";

/// The bearer token of the `Authorization` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(Some(token))
}

/// The `access_token` query parameter (JWTs need no percent-decoding; any `%` makes the
/// token malformed).
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "access_token")
        .map(|(_, v)| v)
}

/// A token offered as a WebSocket subprotocol entry.
pub fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_PROTOCOL_TOKEN_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(&headers(&[])).unwrap(), None);
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc.def.ghi")])).unwrap(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer   abc")])).unwrap(),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic dXNlcg==")])),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer")])),
            Err(AuthError::Missing)
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "abc.def.ghi")])),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer  ")])),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn websocket_token_carriers() {
        assert_eq!(query_token(Some("a=1&access_token=x.y.z")), Some("x.y.z"));
        assert_eq!(query_token(Some("access_tokenx=1")), None);
        assert_eq!(query_token(None), None);
        let h = headers(&[(
            "sec-websocket-protocol",
            "streamedge.v1, access_token.eyJ.eyJ.sig",
        )]);
        assert_eq!(protocol_token(&h), Some("eyJ.eyJ.sig"));
        assert_eq!(
            protocol_token(&headers(&[("sec-websocket-protocol", "streamedge.v1")])),
            None
        );
    }
}
