//! Tests of manifest parsing and checking.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;

const FULL: &str = r#"
name = "my-server"
version = "1.0.0"
description = "demo"
platform = "linux-x86_64"
submodules = ["base@1.2.0", { name = "extra", version = "0.1.0" }]
hook_timeout = "30s"

[hooks]
install = "hooks/install"
configure = { path = "./hooks/configure", timeout = "5s" }

[services.server]
command = ["python3", "serve.py"]

[[templates]]
source = "templates/server.json.j2"
target = "etc/server.json"

[config_schema]
type = "object"
properties.port = { type = "integer", default = 8080 }
"#;

fn parse_toml(text: &str) -> Result<Manifest, ManifestErrors> {
    Manifest::parse(Path::new("module.toml"), text, ManifestFormat::Toml)
}

#[test]
fn full_toml_manifest() {
    let m = parse_toml(FULL).unwrap();
    assert_eq!(m.name, "my-server");
    assert_eq!(m.version, Version::new(1, 0, 0));
    assert_eq!(m.platform.to_string(), "linux-x86_64");
    assert_eq!(m.submodules.len(), 2);
    assert_eq!(m.submodules[1].to_string(), "extra@0.1.0");
    let install = &m.hooks[&HookKind::Install];
    assert_eq!(install.timeout, Duration::from_secs(30));
    let configure = &m.hooks[&HookKind::Configure];
    assert_eq!(configure.path, Path::new("hooks/configure"));
    assert_eq!(configure.timeout, Duration::from_secs(5));
    assert!(matches!(m.services["server"], ServiceSpec::Toml(_)));
    assert!(m.services["server"].to_file_text().contains("command"));
    assert_eq!(m.templates[0].target, Path::new("etc/server.json"));
    assert_eq!(
        m.validate_config(&json!({})).unwrap(),
        json!({"port": 8080})
    );
    assert_eq!(
        m.identity().file_name(),
        "my-server-1.0.0-linux-x86_64.tar.gz"
    );
}

#[test]
fn every_problem_at_once() {
    let text = r#"
name = "../bad"
version = "1.0"
platform = "linux"
submodules = ["nope", "x@1.0.0", "x@2.0.0"]
hook_timeout = "soon"

[hooks]
install = "/bin/sh"
reload = "x"
start = "../start"
stop = { path = "stop", timeout = "0s" }

[services.web]
command = "x"
[services]
"a/b" = { command = "y" }
other = 3

[[templates]]
source = "/etc/shadow"
target = "../../out"

[config_schema]
"$ref" = "https://example.com/s.json"
"#;
    let errors = parse_toml(text).unwrap_err().0;
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "name",
        "version",
        "platform",
        "submodules[0]",
        "submodules[2]",
        "hook_timeout",
        "hooks.install",
        "hooks.reload",
        "hooks.start",
        "hooks.stop.timeout",
        "services.a/b",
        "services.other",
        "templates[0].source",
        "templates[0].target",
        "config_schema",
    ] {
        assert!(fields.contains(&f), "{f} missing in {errors:#?}");
    }
    assert!(errors.iter().all(|e| e.file == Path::new("module.toml")));
}

#[test]
fn missing_fields_and_syntax() {
    let errors = parse_toml("description = \"x\"").unwrap_err().0;
    assert_eq!(errors.len(), 2, "{errors:?}");
    let e = parse_toml("name = \"a\"\nversion = \"1.0.0\"\nbogus = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn outpost_module_json() {
    let text = r#"{
        "name": "redis",
        "version": "2.8.19",
        "submodules": [],
        "scripts": {"configure": "configure.js", "start": "start.js", "stop": "stop.js"},
        "schema": {"configure": {"port": {"type": "integer", "title": "Redis Port",
            "default": 6379, "minimum": 1025, "maximum": 65535, "required": true}}}
    }"#;
    let m = Manifest::parse(Path::new("module.json"), text, ManifestFormat::Json).unwrap();
    assert_eq!(m.hooks.len(), 3);
    assert_eq!(m.hooks[&HookKind::Start].path, Path::new("start.js"));
    assert_eq!(m.hooks[&HookKind::Start].timeout, DEFAULT_HOOK_TIMEOUT);
    assert_eq!(
        m.validate_config(&json!(null)).unwrap(),
        json!({"port": 6379})
    );
    let errs = m.validate_config(&json!({"port": 22})).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn json_services_must_be_objects() {
    let text = r#"{"name": "a", "version": "1.0.0", "services": {"s": {"command": "x"}, "t": []}}"#;
    let errors = Manifest::parse(Path::new("module.json"), text, ManifestFormat::Json)
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "services.t");
}

#[test]
fn load_checks_the_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("hooks")).unwrap();
    std::fs::write(d.join("hooks/install"), "#!/bin/sh\n").unwrap();
    std::fs::write(d.join("hooks/configure"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        d.join("hooks/install"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        d.join("schema.json"),
        r#"{"type": "object", "properties": {"port": {"type": "integer", "default": 1}}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join(MANIFEST_TOML),
        r#"
name = "a"
version = "1.0.0"
config_schema = "schema.json"
hooks = { install = "hooks/install", configure = "hooks/configure", start = "hooks/start" }
templates = [{ source = "t.j2", target = "out" }]
"#,
    )
    .unwrap();
    let errors = Manifest::load(d).unwrap_err().0;
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["hooks.configure", "hooks.start", "templates[0].source"],
        "{errors:#?}"
    );
    std::fs::write(d.join("t.j2"), "x").unwrap();
    std::fs::write(d.join("hooks/start"), "#!/bin/sh\n").unwrap();
    for h in ["configure", "start"] {
        std::fs::set_permissions(
            d.join("hooks").join(h),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
    }
    let m = Manifest::load(d).unwrap();
    assert_eq!(m.validate_config(&json!({})).unwrap(), json!({"port": 1}));
    // A schema file cannot be read without the directory.
    let text = std::fs::read_to_string(d.join(MANIFEST_TOML)).unwrap();
    assert!(parse_toml(&text).is_err());
    // Both manifests: refused.
    std::fs::write(d.join(MANIFEST_JSON), "{}").unwrap();
    assert!(Manifest::load(d).unwrap_err().to_string().contains("both"));
}
