//! Integer fields of JSON request bodies, read as JSON Schema's `integer` reads them: any
//! JSON number without a fractional part, so `600`, `600.0` and `6e2` are the same value
//! (clients whose JSON encoder writes every number as a float are not refused), while
//! `600.5`, negative numbers and strings stay `invalid_body`. Use with
//! `#[serde(deserialize_with = "integer::u64")]` (or `integer::option_u64` with
//! `#[serde(default)]`).

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// A JSON number without a fractional part, from 0 to `u64::MAX`.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64)
}

/// As [`u64()`], or `null`.
pub fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(OptionU64)
}

struct U64;

impl Visitor<'_> for U64 {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 is the first float above u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

struct OptionU64;

impl<'de> Visitor<'de> for OptionU64 {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        u64(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::u64")]
        n: u64,
        #[serde(default, deserialize_with = "super::option_u64")]
        o: Option<u64>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integral_numbers_in_any_notation() {
        for (json, n) in [
            (r#"{"n": 600}"#, 600),
            (r#"{"n": 600.0}"#, 600),
            (r#"{"n": 6e2}"#, 600),
            (r#"{"n": 4439.0}"#, 4439),
            (r#"{"n": 0}"#, 0),
            (r#"{"n": -0.0}"#, 0),
            (r#"{"n": 18446744073709551615}"#, u64::MAX),
        ] {
            assert_eq!(parse(json).unwrap().n, n, "{json}");
        }
        assert_eq!(parse(r#"{"n": 1, "o": 7.0}"#).unwrap().o, Some(7));
        assert_eq!(parse(r#"{"n": 1, "o": null}"#).unwrap().o, None);
        assert_eq!(parse(r#"{"n": 1}"#).unwrap().o, None);
    }

    #[test]
    fn anything_else_is_a_data_error() {
        for json in [
            r#"{"n": 600.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 1e20}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": "600"}"#,
            r#"{"n": null}"#,
            r#"{"n": true}"#,
            r#"{"n": 1, "o": 0.5}"#,
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.is_data(), "{json}: {e}");
        }
    }
}
