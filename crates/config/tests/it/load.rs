//! `load_services_dir`: every file, every error, and the survivors in start order.

use reeve_config::load_services_dir;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn names(r: &reeve_config::LoadReport) -> Vec<&str> {
    r.services.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn good_bad_and_ordered() {
    let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = t.path();
    write(d, "web.toml", "command = [\"w\"]\nrequires = [\"db\"]\n");
    write(
        d,
        "db.json",
        r#"{"command": ["pg"], "provides": ["database"], "priority": 1}"#,
    );
    write(
        d,
        "broken.toml",
        "command = [\"b\"]\n[restart]\njitter = 7\n[log]\nkeep = 1000\n",
    );
    write(
        d,
        "needs-broken.toml",
        "command = [\"n\"]\nrequires = [\"broken\"]\n",
    );
    write(
        d,
        "orphan.toml",
        "command = [\"o\"]\nrequires = [\"nothing\"]\n",
    );
    write(
        d,
        "stranded.toml",
        "command = [\"s\"]\nrequires = [\"orphan\"]\n",
    );
    write(d, "x.toml", "command = [\"x\"]\nrequires = [\"y\"]\n");
    write(d, "y.toml", "command = [\"y\"]\nrequires = [\"x\"]\n");
    write(
        d,
        "after-cycle.toml",
        "command = [\"z\"]\nrequires = [\"x\"]\n",
    );
    write(d, "early.toml", "command = [\"e\"]\npriority = -1\n");
    write(d, "README.md", "not a service");
    write(d, "web.toml~", "backup, ignored");
    write(d, ".hidden.toml", "command = [\"h\"]\n");
    std::fs::create_dir(d.join("sub.toml")).unwrap_or_else(|e| panic!("{e}"));

    let r = load_services_dir(d);
    assert_eq!(names(&r), ["early", "db", "web"]);

    let errs: Vec<(String, &str)> = r
        .errors
        .iter()
        .map(|e| {
            let file = e
                .file
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("?")
                .to_owned();
            (file, e.field.as_str())
        })
        .collect();
    let has = |f: &str, field: &str| errs.iter().any(|(a, b)| a == f && *b == field);
    assert!(has(".hidden.toml", ""), "{errs:?}");
    assert!(has("broken.toml", "restart.jitter"), "{errs:?}");
    assert!(has("broken.toml", "log.keep"), "{errs:?}");
    assert!(has("needs-broken.toml", "requires"), "{errs:?}");
    assert!(has("orphan.toml", "requires"), "{errs:?}");
    assert!(has("stranded.toml", "requires"), "{errs:?}");
    assert!(has("x.toml", "requires"), "{errs:?}");
    assert!(has("y.toml", "requires"), "{errs:?}");
    assert!(has("after-cycle.toml", "requires"), "{errs:?}");
    assert_eq!(errs.len(), 9, "{:#?}", r.errors);

    let text = |f: &str| {
        r.errors
            .iter()
            .find(|e| e.file.ends_with(f))
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    assert!(
        text("x.toml").ends_with("requires: dependency cycle: x → y → x"),
        "{}",
        text("x.toml")
    );
    assert!(text("orphan.toml").ends_with("no service provides `nothing`"));
    assert!(text("needs-broken.toml").ends_with("`broken` is not available: its file has errors"));
    assert!(text("stranded.toml").contains("provided only by services that cannot start"));
}

#[test]
fn the_same_name_twice_is_ambiguous() {
    let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(t.path(), "web.toml", "command = [\"w\"]\n");
    write(t.path(), "web.json", r#"{"command": ["w"]}"#);
    write(t.path(), "ok.toml", "command = [\"ok\"]\n");
    let r = load_services_dir(t.path());
    assert_eq!(names(&r), ["ok"]);
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
}

#[test]
fn a_missing_directory_is_one_error() {
    let r = load_services_dir(Path::new("/nonexistent/reeve/services"));
    assert!(r.services.is_empty());
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].field, "");
}

#[test]
fn non_utf8_content_is_an_error() {
    let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(t.path().join("bin.toml"), [0xff, 0xfe, 0x00]).unwrap_or_else(|e| panic!("{e}"));
    let r = load_services_dir(t.path());
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].reason.contains("UTF-8"));
}
