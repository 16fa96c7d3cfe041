//! The documentation keeps up with the code: every problem `code` the node can answer
//! with is listed in docs/api.md and in the OpenAPI enum, every WebSocket close code
//! the node sends is in docs/protocol.md, and the OpenAPI `pattern` for text (titles,
//! user ids) accepts what the node's text rule accepts. (scripts/schemathesis checks the
//! rest of docs/openapi.yaml against a running node.)

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn rust_sources(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(std::fs::read_to_string(&p).unwrap());
        }
    }
}

/// Problem codes: the string literal after `ErrorKind::X,` in `ApiError::new(...)` calls,
/// and the `=> "code"` arms of `AuthError::code`.
fn problem_codes() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut codes = BTreeSet::new();
    for f in &files {
        let flat: String = f.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in flat.split("ErrorKind::").skip(1) {
            let Some(rest) = part.split_once(',').map(|(_, r)| r.trim_start()) else {
                continue;
            };
            if let Some(lit) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                if !lit.is_empty() && lit.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    codes.insert(lit.to_string());
                }
            }
        }
        for part in flat.split("AuthError::").skip(1) {
            if let Some(lit) = part
                .split_once("=> \"")
                .filter(|(head, _)| !head.contains(' ') || head.len() < 40)
                .and_then(|(_, r)| r.split('"').next())
            {
                if lit.starts_with("token_") || lit.starts_with("auth_") {
                    codes.insert(lit.to_string());
                }
            }
        }
    }
    codes
}

#[test]
fn every_problem_code_is_documented() {
    let codes = problem_codes();
    assert!(codes.len() > 30, "found only {codes:?}");
    assert!(codes.contains("token_alg_mismatch") && codes.contains("invalid_transition"));
    let api = read("docs/api.md");
    let openapi = read("docs/openapi.yaml");
    let missing_api: Vec<_> = codes
        .iter()
        .filter(|c| !api.contains(&format!("`{c}`")))
        .collect();
    let missing_openapi: Vec<_> = codes
        .iter()
        .filter(|c| !openapi.contains(&format!("- {c}\n")))
        .collect();
    assert!(
        missing_api.is_empty(),
        "not in docs/api.md: {missing_api:?}"
    );
    assert!(
        missing_openapi.is_empty(),
        "not in docs/openapi.yaml: {missing_openapi:?}"
    );
}

#[test]
fn every_close_code_is_documented() {
    let queue = read("src/ws/queue.rs");
    let protocol = read("docs/protocol.md");
    let codes: Vec<&str> = queue
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split("u16 = ").nth(1))
        .map(|v| v.trim_end_matches(';'))
        .collect();
    assert!(codes.len() >= 6, "{codes:?}");
    for c in codes {
        assert!(
            protocol.contains(&format!("| {c} |")),
            "close code {c} not in docs/protocol.md"
        );
    }
}

/// A double-quoted YAML scalar's content, unescaped (the escapes docs/openapi.yaml uses).
fn yaml_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let hex = |n: usize, chars: &mut std::str::Chars| {
            let h: String = chars.take(n).collect();
            char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap()
        };
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('x') => out.push(hex(2, &mut chars)),
            Some('u') => out.push(hex(4, &mut chars)),
            Some('U') => out.push(hex(8, &mut chars)),
            other => panic!("unexpected YAML escape {other:?} in {s}"),
        }
    }
    out
}

#[test]
fn the_openapi_text_pattern_is_the_nodes_text_rule() {
    use streamedge::domain::text::check;
    let openapi = read("docs/openapi.yaml");
    // The patterns of StreamTitle and UserId: the ones naming U+2028.
    let patterns: Vec<String> = openapi
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pattern: \""))
        .filter_map(|p| p.strip_suffix('"'))
        .map(yaml_unescape)
        .filter(|p| p.contains("\\u2028"))
        .collect();
    assert_eq!(patterns.len(), 2, "{patterns:?}");
    for pattern in patterns {
        let re = regex::Regex::new(&pattern).unwrap();
        // Every character alone (is it visible?) and after a visible one (is it allowed?).
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for text in [c.to_string(), format!("a{c}"), format!("{c}a")] {
                assert_eq!(
                    re.is_match(&text),
                    check(&text).is_ok(),
                    "{text:?} (U+{:04X})",
                    c as u32
                );
            }
        }
    }
}
