//! Reading a file's text into the raw types, turning TOML and JSON errors into
//! [`ConfigError`]s that name the line and, where it can be told, the field.

use super::raw::{Keys, RawService};
use crate::error::ConfigError;
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::path::Path;

/// Whether `file` is read as JSON (by its extension) rather than TOML.
pub(crate) fn is_json(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Phase one: the raw service and the top-level keys it was written with.
pub(crate) fn read(file: &Path, text: &str) -> Result<(RawService, Keys), ConfigError> {
    if is_json(file) {
        let raw = serde_json::from_str::<RawService>(text).map_err(|e| json_error(file, &e))?;
        let keys = serde_json::from_str::<BTreeMap<String, IgnoredAny>>(text)
            .map(|m| Keys(m.into_keys().collect()))
            .unwrap_or_default();
        Ok((raw, keys))
    } else {
        let raw = toml::from_str::<RawService>(text).map_err(|e| toml_error(file, text, &e))?;
        let keys = toml::from_str::<BTreeMap<String, IgnoredAny>>(text)
            .map(|m| Keys(m.into_keys().collect()))
            .unwrap_or_default();
        Ok((raw, keys))
    }
}

fn json_error(file: &Path, e: &serde_json::Error) -> ConfigError {
    ConfigError::new(file, "", e.to_string())
}

fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return ConfigError::new(file, "", message);
    };
    let start = floor_char_boundary(text, span.start);
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let field = field_at(before, &text[start..], &message);
    ConfigError::new(
        file,
        field,
        format!("line {line}, column {column}: {message}"),
    )
}

/// Best-effort dotted path of the key on the line an error points at: the last `[table]`
/// header above it plus the key before `=` (or, for an unknown field, its name).
fn field_at(before: &str, after: &str, message: &str) -> String {
    let line_start = before.rsplit('\n').next().unwrap_or("");
    let line_rest = after.split('\n').next().unwrap_or("");
    let line = format!("{line_start}{line_rest}");
    let previous_lines = &before[..before.rfind('\n').unwrap_or(0)];
    let header = previous_lines
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            (t.starts_with('[') && !t.starts_with("[[") && t.ends_with(']'))
                .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        })
        .unwrap_or_default();
    let key = if let Some(name) = unknown_field_name(message) {
        Some(name)
    } else if line.trim_start().starts_with('[') {
        None
    } else {
        line.split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
            .filter(|k| !k.is_empty())
    };
    match (header.is_empty(), key) {
        (_, None) => header,
        (true, Some(k)) => k,
        (false, Some(k)) => format!("{header}.{k}"),
    }
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name.to_owned())
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        match read(Path::new("/s/x.toml"), text) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {text:?}"),
        }
    }

    #[test]
    fn unknown_field_is_named_with_its_table() {
        let e = err("command = [\"a\"]\n\n[restart]\npolicy = \"always\"\nbogus = 1\n");
        assert_eq!(e.field, "restart.bogus");
        assert!(
            e.reason
                .starts_with("line 5, column 1: unknown field `bogus`"),
            "{e}"
        );
        let e = err("commnd = [\"a\"]\n");
        assert_eq!(e.field, "commnd");
        assert!(e.reason.contains("unknown field `commnd`"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = err("[log]\nkeep = \"many\"\n");
        assert_eq!(e.field, "log.keep");
        assert!(e.reason.starts_with("line 2"), "{e}");
    }

    #[test]
    fn syntax_errors_are_whole_file_or_line() {
        let e = err("command = [\n");
        assert!(e.reason.contains("line"), "{e}");
        assert!(!e.reason.contains('\n'));
    }

    #[test]
    fn json_errors() {
        let e = match read(Path::new("/s/x.json"), "{\"bogus\": 1}") {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        };
        assert_eq!(e.field, "");
        assert!(e.reason.contains("unknown field `bogus`"), "{e}");
        assert!(e.reason.contains("line 1"), "{e}");
    }
}
