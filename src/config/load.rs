//! Loading: an optional TOML file, then `STREAMEDGE_SECTION__KEY` environment overrides,
//! then typed deserialisation (unknown keys rejected) and [`Config::validate`].

use std::path::{Path, PathBuf};

use super::Config;

/// Environment variables with this prefix override config keys: `STREAMEDGE_REDIS__URL`
/// sets `redis.url` (sections separated by a double underscore).
pub const ENV_PREFIX: &str = "STREAMEDGE_";

/// `STREAMEDGE_*` variables that are not config keys: the config file's path, and the node
/// binary's path that test and benchmark tools pass around.
const RESERVED_ENV: &[&str] = &["STREAMEDGE_CONFIG", "STREAMEDGE_BIN"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// The config key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Where configuration comes from. `main` fills it from the CLI and the process
/// environment; tests build it by hand.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    /// `(name, value)` pairs; only names starting with [`ENV_PREFIX`] are used.
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::vars().collect(),
        }
    }
}

/// Loads and validates the configuration.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
    let config = load_unvalidated(source)?;
    config.validate()?;
    Ok(config)
}

/// Loads the configuration without the cross-key checks of [`Config::validate`] (for
/// `--dev`, which fills development values in before validating).
pub fn load_unvalidated(source: &ConfigSource) -> Result<Config, ConfigError> {
    let mut table = match &source.file {
        Some(path) => read_file(path)?,
        None => toml::Table::new(),
    };
    let mut overrides: Vec<_> = source
        .env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !RESERVED_ENV.contains(&k.as_str()))
        .collect();
    overrides.sort();
    // Key → (variable, raw value) of overrides read as a non-string TOML literal.
    let mut coerced = std::collections::HashMap::new();
    for (name, value) in overrides {
        if let Some(key) = apply_env(&mut table, name, value, false)? {
            coerced.insert(key, (name.clone(), value.clone()));
        }
    }
    // An override that looked like a number (`STREAMEDGE_AGORA__APP_ID=1234…`) but names
    // a string key is retried as the string it was written as.
    let config = loop {
        match from_table(table.clone()) {
            Ok(c) => break c,
            Err(ConfigError::Invalid { key, message }) => match coerced.remove(&key) {
                Some((name, raw)) => {
                    apply_env(&mut table, &name, &raw, true)?;
                }
                None => return Err(ConfigError::Invalid { key, message }),
            },
            Err(e) => return Err(e),
        }
    };
    Ok(config)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })
}

/// Sets the key an override names. Returns the dotted key when the value was read as a
/// non-string literal (so it can be retried as a string).
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    value: &str,
    as_string: bool,
) -> Result<Option<String>, ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let dotted = path.join(".");
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Invalid {
            key: dotted,
            message: format!("environment variable {name} does not name a config key"),
        });
    }
    let mut cur = table;
    for part in &path[..path.len() - 1] {
        let entry = cur
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Invalid {
                    key: dotted,
                    message: format!(
                        "{name} overrides a key inside `{part}`, which is not a section"
                    ),
                })
            }
        };
    }
    let v = if as_string {
        toml::Value::String(value.to_string())
    } else {
        parse_env_value(value)
    };
    let coerced = !v.is_str();
    cur.insert(path[path.len() - 1].clone(), v);
    Ok(coerced.then_some(dotted))
}

/// An environment value is read as a TOML literal when it is one (`42`, `true`,
/// `["a", "b"]`), and as a plain string otherwise (`30s`, `127.0.0.1:8080`).
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Config>(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err
            .inner()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        // serde reports an unknown key at its parent; name the key itself.
        let key = match message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            Some(field) if path == "." || path.is_empty() => field.to_string(),
            Some(field) if path == field || path.ends_with(&format!(".{field}")) => path,
            Some(field) => format!("{path}.{field}"),
            None => path,
        };
        ConfigError::Invalid { key, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn empty_source_is_defaults() {
        assert_eq!(load(&env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn shipped_default_toml_matches_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let src = ConfigSource {
            file: Some(path),
            env: vec![],
        };
        assert_eq!(load(&src).unwrap(), Config::default());
    }

    /// Every key of the configuration appears, with a comment above it, in the shipped
    /// `config/default.toml`.
    #[test]
    fn shipped_default_toml_documents_every_key() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
        )
        .unwrap();
        let shipped: toml::Table = text.parse().unwrap();
        let defaults: toml::Table = toml::Table::try_from(Config::default()).unwrap();
        fn walk(prefix: &str, want: &toml::Table, have: &toml::Table, text: &str) {
            for (k, v) in want {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let got = have
                    .get(k)
                    .unwrap_or_else(|| panic!("default.toml lacks `{key}`"));
                match (v, got) {
                    (toml::Value::Table(w), toml::Value::Table(h)) => walk(&key, w, h, text),
                    _ => {
                        let lines: Vec<&str> = text.lines().collect();
                        let at = lines
                            .iter()
                            .position(|l| l.starts_with(&format!("{k} =")))
                            .unwrap_or_else(|| panic!("`{key}` not at the start of a line"));
                        assert!(
                            at > 0
                                && lines[..at]
                                    .iter()
                                    .rev()
                                    .take_while(|l| !l.is_empty())
                                    .any(|l| l.starts_with('#')),
                            "`{key}` has no comment above it"
                        );
                    }
                }
            }
        }
        walk("", &defaults, &shipped, &text);
    }

    #[test]
    fn env_overrides_typed_values() {
        let c = load(&env(&[
            ("STREAMEDGE_REDIS__URL", "redis://127.0.0.1:6390/"),
            ("STREAMEDGE_WS__MAX_CONNECTIONS", "42"),
            ("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "15s"),
            ("STREAMEDGE_SERVER__LISTEN", "0.0.0.0:8081"),
            ("STREAMEDGE_LOG__FORMAT", "json"),
            ("STREAMEDGE_CONFIG", "/ignored.toml"),
            ("OTHER_VAR", "x"),
        ]))
        .unwrap();
        assert_eq!(c.redis.url, "redis://127.0.0.1:6390/");
        assert_eq!(c.ws.max_connections, 42);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(15));
        assert_eq!(c.server.listen.port(), 8081);
        assert_eq!(c.log.format, crate::config::LogFormat::Json);
    }

    #[test]
    fn numeric_looking_values_of_string_keys_stay_strings() {
        let c = load(&env(&[
            (
                "STREAMEDGE_AGORA__APP_ID",
                "12345678901234567890123456789012",
            ),
            (
                "STREAMEDGE_AGORA__APP_CERTIFICATE",
                "1234567890123456789012345678901e",
            ),
            ("STREAMEDGE_SERVER__NODE_ID", "42"),
            ("STREAMEDGE_WS__MAX_CONNECTIONS", "42"),
        ]))
        .unwrap();
        assert_eq!(c.agora.app_id, "12345678901234567890123456789012");
        assert_eq!(c.server.node_id, "42");
        assert_eq!(c.ws.max_connections, 42);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load(&env(&[("STREAMEDGE_SERVER__LISEN", "x")])).unwrap_err();
        assert_eq!(e.key(), Some("server.lisen"), "{e}");
        let e = load(&env(&[("STREAMEDGE_NOPE__X", "1")])).unwrap_err();
        assert_eq!(e.key(), Some("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = load(&env(&[("STREAMEDGE_WS__MAX_CONNECTIONS", "lots")])).unwrap_err();
        assert_eq!(e.key(), Some("ws.max_connections"), "{e}");
        let e = load(&env(&[("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "soon")])).unwrap_err();
        assert_eq!(e.key(), Some("server.shutdown_grace"), "{e}");
        let e = load(&env(&[("STREAMEDGE_LOG__FORMAT", "xml")])).unwrap_err();
        assert_eq!(e.key(), Some("log.format"), "{e}");
        let e = load(&env(&[("STREAMEDGE_REDIS__URL", "http://x")])).unwrap_err();
        assert_eq!(e.key(), Some("redis.url"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("se-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "[server\nlisten = 1").unwrap();
        let e = load(&ConfigSource {
            file: Some(f.clone()),
            env: vec![],
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
