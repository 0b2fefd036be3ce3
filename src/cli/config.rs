//! The config file scheme k3s users know: `/etc/skua/config.yaml` plus
//! `config.yaml.d/*.yaml` in name order, keys named like the flags, values as YAML
//! scalars or lists (`key+:` appends to a list set by an earlier file).
//! Precedence: flag > environment variable > file > default.
//!
//! The merge is generic over the clap definition: file values are turned into flags
//! for every argument that was not set on the command line or through its environment
//! variable, and the command line is parsed again.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/skua/config.yaml";

/// A config file that cannot be used; the message names the file and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "config file {path}: unknown key {key:?}: `skua {command}` has no flag --{key} (see `skua {command} --help`)"
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        command: String,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("config file {path} does not exist (given with --config or SKUA_CONFIG_FILE)")]
    Missing { path: PathBuf },
    #[error("cannot read config file {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// The files to read for `config`, in order: the file itself, then `<file>.d/*.yaml`.
fn config_files(config: &Path, explicit: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    if config.exists() {
        files.push(config.to_path_buf());
    } else if explicit {
        return Err(ConfigError::Missing {
            path: config.to_path_buf(),
        });
    }
    let mut dir = config.as_os_str().to_owned();
    dir.push(".d");
    if let Ok(entries) = std::fs::read_dir(PathBuf::from(dir)) {
        let mut extra: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        extra.sort();
        files.extend(extra);
    }
    Ok(files)
}

fn read_file(path: &Path) -> Result<BTreeMap<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid YAML: {e}"),
    })?;
    match value {
        Value::Object(map) => Ok(map.into_iter().collect()),
        Value::Null => Ok(BTreeMap::new()),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            message: "expected a mapping of flag names to values".into(),
        }),
    }
}

/// Returns `argv` with the config file values added as flags, or `None` for commands
/// that take no config file.
pub fn merge(
    cli: &Command,
    matches: &ArgMatches,
    mut argv: Vec<OsString>,
) -> Result<Option<Vec<OsString>>, ConfigError> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(None);
    };
    let Some(command) = cli.find_subcommand(name) else {
        return Ok(None);
    };
    let Ok(Some(config)) = sub.try_get_one::<PathBuf>("config") else {
        return Ok(None);
    };
    let explicit = matches!(
        sub.value_source("config"),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    // later files override earlier ones; `key+` appends
    let mut merged: BTreeMap<String, (PathBuf, Value)> = BTreeMap::new();
    for path in config_files(config, explicit)? {
        for (key, value) in read_file(&path)? {
            let (key, append) = match key.strip_suffix('+') {
                Some(k) => (k.to_string(), true),
                None => (key, false),
            };
            let known = command
                .get_arguments()
                .any(|a| a.get_long() == Some(key.as_str()) && a.get_id() != "config");
            if !known {
                return Err(ConfigError::UnknownKey {
                    path: path.clone(),
                    key,
                    command: name.to_string(),
                });
            }
            let value = match (append, merged.remove(&key)) {
                (true, Some((_, old))) => {
                    Value::Array(as_list(old).into_iter().chain(as_list(value)).collect())
                }
                _ => value,
            };
            merged.insert(key, (path.clone(), value));
        }
    }
    for (key, (path, value)) in merged {
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            continue;
        };
        if matches!(
            sub.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                Value::Bool(true) => argv.push(format!("--{key}").into()),
                Value::Bool(false) => {}
                Value::String(s) if s == "true" => argv.push(format!("--{key}").into()),
                Value::String(s) if s == "false" => {}
                other => return Err(invalid(format!("{key} must be true or false, not {other}"))),
            }
            continue;
        }
        let many = matches!(arg.get_action(), ArgAction::Append);
        let items = as_list(value);
        if items.len() > 1 && !many {
            return Err(invalid(format!("{key} takes one value, not a list")));
        }
        for item in items {
            let text = match item {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(invalid(format!(
                        "{key} must be a scalar or a list of scalars, not {other}"
                    )));
                }
            };
            argv.push(format!("--{key}={text}").into());
        }
    }
    Ok(Some(argv))
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `--disable`: a packaged component k3s knows.
pub fn parse_disable(s: &str) -> Result<String, crate::config::ConfigError> {
    crate::config::Disabled::default().add(s)?;
    Ok(s.to_string())
}

/// A duration like `300s`, `5m`, `1h` or `1h30m` (Kubernetes flags' style).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, crate::config::ConfigError> {
    let bad = || crate::config::ConfigError::NotDuration(s.to_string());
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("5m").ok(),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(std::time::Duration::from_secs(5400))
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
