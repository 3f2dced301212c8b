//! The configuration's JSON Schema: compiling it offline (no remote `$ref`), applying its
//! `default`s, and reporting every violation. Also Outpost's schema form, mapped.

use serde_json::{Map, Value};

/// Compiles `schema` without fetching anything: a `$ref` to anything outside the schema
/// itself is an error.
pub(super) fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .offline()
        .build(schema)
        .map_err(|e| format!("not a usable JSON Schema: {e}"))
}

/// Maps Outpost's `schema` (`{"configure": {"port": {"type": "integer", "required": true,
/// …}}}`) to a JSON Schema object: each field becomes a property (without its `required`),
/// and the fields marked `required: true` are listed in `required`.
pub(super) fn from_outpost(outpost: &Value) -> Result<Value, String> {
    let fields = outpost
        .get("configure")
        .and_then(Value::as_object)
        .ok_or("Outpost's schema must be {\"configure\": {FIELD: {…}, …}}")?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, field) in fields {
        let mut field = field
            .as_object()
            .ok_or_else(|| format!("configure.{name} must be an object"))?
            .clone();
        if field.remove("required") == Some(Value::Bool(true)) {
            required.push(Value::String(name.clone()));
        }
        properties.insert(name.clone(), Value::Object(field));
    }
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), Value::Array(required));
    }
    Ok(Value::Object(schema))
}

/// Fills in defaults, then validates; see [`super::Manifest::validate_config`].
pub(super) fn validate(schema: Option<&Value>, config: &Value) -> Result<Value, Vec<String>> {
    let mut config = match config {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    };
    let Some(schema) = schema else {
        return if config.is_object() {
            Ok(config)
        } else {
            Err(vec!["the configuration must be a JSON object".to_owned()])
        };
    };
    apply_defaults(schema, &mut config);
    let validator = compile(schema).map_err(|e| vec![e])?;
    let errors: Vec<String> = validator
        .iter_errors(&config)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("{at}: {e}")
        })
        .collect();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Inserts the `default` of every property missing from `instance`, recursing through
/// `properties`, `items` (a single schema) and `allOf`.
fn apply_defaults(schema: &Value, instance: &mut Value) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all_of {
            apply_defaults(sub, instance);
        }
    }
    match instance {
        Value::Object(fields) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, sub) in props {
                if !fields.contains_key(name)
                    && let Some(default) = sub.get("default")
                {
                    fields.insert(name.clone(), default.clone());
                }
                if let Some(value) = fields.get_mut(name) {
                    apply_defaults(sub, value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer", "default": 8080, "minimum": 1, "maximum": 65535},
                "name": {"type": "string"},
                "tls": {
                    "type": "object",
                    "default": {},
                    "properties": {"enabled": {"type": "boolean", "default": false}}
                },
                "backends": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"weight": {"type": "integer", "default": 1}}}
                }
            },
            "required": ["name"],
            "additionalProperties": false
        })
    }

    #[test]
    fn defaults_are_applied_recursively() {
        let got = validate(
            Some(&schema()),
            &json!({"name": "x", "backends": [{}, {"weight": 3}]}),
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"name": "x", "port": 8080, "tls": {"enabled": false},
                   "backends": [{"weight": 1}, {"weight": 3}]})
        );
    }

    #[test]
    fn every_violation_is_reported() {
        let errors = validate(
            Some(&schema()),
            &json!({"port": 0, "tls": {"enabled": "yes"}, "extra": 1}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        let all = errors.join("\n");
        assert!(all.contains("/port"), "{all}");
        assert!(all.contains("/tls/enabled"), "{all}");
        assert!(all.contains("name"), "{all}");
        assert!(all.contains("extra"), "{all}");
    }

    #[test]
    fn remote_refs_are_refused() {
        for s in [
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"properties": {"a": {"$ref": "http://127.0.0.1:1/x.json"}}}),
            json!({"$ref": "file:///etc/passwd"}),
        ] {
            assert!(compile(&s).is_err(), "{s}");
        }
        assert!(compile(&json!({"$defs": {"p": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/p"}}})).is_ok());
    }

    #[test]
    fn no_schema_takes_any_object() {
        assert_eq!(validate(None, &Value::Null).unwrap(), json!({}));
        assert!(validate(None, &json!([1])).is_err());
    }

    #[test]
    fn outpost_schema_is_mapped() {
        let s = from_outpost(&json!({"configure": {
            "port": {"type": "integer", "title": "Redis Port", "default": 6379,
                     "minimum": 1025, "maximum": 65535, "required": true}
        }}))
        .unwrap();
        assert_eq!(s["required"], json!(["port"]));
        assert_eq!(
            validate(Some(&s), &json!({})).unwrap(),
            json!({"port": 6379})
        );
        assert!(validate(Some(&s), &json!({"port": 80})).is_err());
        assert!(from_outpost(&json!({"port": {}})).is_err());
    }
}
