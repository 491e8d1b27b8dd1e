//! The exporter's unit tests: schema validity and the translation of each plan part.

use std::path::Path;

use super::*;
use crate::paths::{EnvInput, Paths};
use crate::plan::{Facts, Overrides, PlanInput, StateMode};

fn plan_for(profile: &str) -> std::result::Result<Plan, crate::plan::Error> {
    let paths = Paths::resolve(&EnvInput {
        home: Some("/home/u".into()),
        cwd: "/home/u/project".into(),
        ..Default::default()
    })
    .unwrap();
    let prof = crate::profile::load(profile, Path::new("/nonexistent")).unwrap();
    let dir = paths.sessions_dir.join("0193a1b2");
    crate::plan::build(&PlanInput {
        paths: &paths,
        session_id: "0193a1b2",
        session_dir: &dir,
        argv: vec!["claude".into()],
        cwd: "/home/u/project".into(),
        host_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        uid: 1000,
        gid: 1000,
        state_mode: StateMode::Overlay,
        profile: &prof,
        overrides: &Overrides::default(),
        exe: "/usr/bin/claude".into(),
        facts: &Facts::default(),
        tty: None,
        remove_on_exit: false,
    })
}

fn target(rootless: bool) -> Target {
    Target {
        rootless: rootless.then_some((1000, 1000)),
        hooks: None,
        private_masks: None,
    }
}

fn json(profile: &str, rootless: bool) -> serde_json::Value {
    let e = export(&plan_for(profile).unwrap(), &target(rootless)).unwrap();
    serde_json::from_str(&to_json(&e.spec).unwrap()).unwrap()
}

fn namespaces(doc: &serde_json::Value) -> Vec<String> {
    let list = doc["linux"]["namespaces"].as_array().unwrap();
    list.iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect()
}

/// The runtime-spec schema, vendored under tests/oci-schema; `$ref`s name sibling
/// files ("defs.json#/…"), served here from disk.
fn validator() -> jsonschema::Validator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oci-schema");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    // A URI: a checkout path may hold a space.
    let base = format!("file://{}/", dir.display().to_string().replace(' ', "%20"));
    let mut opts = jsonschema::options().with_draft(jsonschema::Draft::Draft4);
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") && name != "config-schema.json" {
            opts = opts.with_resource(
                format!("{base}{name}"),
                jsonschema::Resource::from_contents(read(&name)),
            );
        }
    }
    let mut root = read("config-schema.json");
    root["id"] = format!("{base}config-schema.json").into();
    opts.build(&root).expect("the vendored schema compiles")
}

#[test]
fn every_sandboxed_builtin_profile_converts_to_a_schema_valid_config() {
    let v = validator();
    for (name, _) in crate::profile::BUILTINS {
        if *name == "compat" {
            continue;
        }
        for rootless in [false, true] {
            let doc = json(name, rootless);
            let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "profile {name} (rootless {rootless}): {errors:#?}\n{doc:#}"
            );
        }
    }
}

#[test]
fn the_schema_check_catches_a_broken_config() {
    let mut doc = json("default", false);
    doc["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE"}]);
    assert!(!validator().is_valid(&doc));
    // A rule in a file the root schema reaches by $ref (defs-linux.json).
    let mut doc = json("default", false);
    doc["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_MAYBE".into();
    assert!(!validator().is_valid(&doc));
}

#[test]
fn compat_has_no_sandbox_to_export() {
    let err = export(&plan_for("compat").unwrap(), &target(false)).unwrap_err();
    assert!(err.to_string().contains("no sandbox"), "{err}");
}

#[test]
fn tiocsti_is_refused_on_the_low_32_bits_of_the_ioctl_request() {
    let doc = json("default", false);
    let rules = doc["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    let tiocsti = rules
        .iter()
        .find(|r| r["names"][0] == "ioctl" && r["args"][0]["valueTwo"] == 0x5412)
        .expect("a TIOCSTI rule");
    assert_eq!(tiocsti["args"][0]["index"], 1);
    assert_eq!(tiocsti["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(tiocsti["args"][0]["value"], 0xFFFF_FFFFu64);
    assert_eq!(tiocsti["errnoRet"], 1);
    assert_eq!(doc["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
}

#[test]
fn strict_adds_its_denied_calls_and_drops_the_32_bit_abis() {
    let doc = json("strict", false);
    let sc = &doc["linux"]["seccomp"];
    assert!(sc["syscalls"].as_array().unwrap().iter().any(|r| r["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "bpf")));
    assert_eq!(sc["architectures"].as_array().unwrap().len(), 1);
    assert_eq!(
        json("default", false)["linux"]["seccomp"]["architectures"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn the_claude_dir_is_an_overlay_on_the_session_layer() {
    let doc = json("default", false);
    let ov = doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "overlay" && m["destination"] == "/home/u/.claude")
        .unwrap();
    assert_eq!(ov["destination"], "/home/u/.claude");
    let opts: Vec<&str> = ov["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    // The mask layer over an empty dir: no layer of the host's ~/.claude (A8-1).
    let sd = "/home/u/.local/share/csbox/sessions/0193a1b2";
    let lower = format!("lowerdir={sd}/claude-masks:{sd}/claude-base");
    assert!(opts.contains(&lower.as_str()), "{opts:?}");
    assert!(
        opts.iter()
            .any(|o| o.starts_with("upperdir=") && o.ends_with("0193a1b2/state")),
        "{opts:?}"
    );
}

#[test]
fn hidden_paths_are_masked_and_no_capability_is_kept() {
    let doc = json("default", false);
    let masked = doc["linux"]["maskedPaths"].as_array().unwrap();
    assert!(
        masked
            .iter()
            .any(|p| p == "/home/u/.local/share/csbox/sessions"),
        "{masked:?}"
    );
    let caps = &doc["process"]["capabilities"];
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(caps[set], serde_json::json!([]), "{set}");
    }
    assert_eq!(doc["process"]["noNewPrivileges"], true);
}

#[test]
fn rootless_maps_the_users_ids_in_a_user_namespace_and_root_run_has_none() {
    let doc = json("default", true);
    let ns = namespaces(&doc);
    assert!(ns.contains(&"user".to_string()));
    assert_eq!(
        doc["linux"]["uidMappings"],
        serde_json::json!([{"hostID": 1000, "containerID": 0, "size": 1}])
    );
    let doc = json("default", false);
    assert!(!namespaces(&doc).contains(&"user".to_string()));
    assert!(doc["linux"].get("uidMappings").is_none());
    assert_eq!(doc["process"]["user"]["uid"], 1000);
}

#[test]
fn strict_hides_the_home_and_brings_no_host_home_bind() {
    let doc = json("strict", false);
    let mounts = doc["mounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["destination"] == "/home/u" && m["type"] == "tmpfs"));
    assert!(!mounts
        .iter()
        .any(|m| m["destination"] == "/home/u" && m["type"] == "bind"));
    let ns = namespaces(&doc);
    assert!(ns.contains(&"network".to_string()), "{ns:?}");
}

#[test]
fn what_the_runtime_cannot_express_is_listed() {
    let e = export(&plan_for("ci").unwrap(), &target(false)).unwrap();
    let notes = e.notes.join("\n");
    for word in ["wall-clock", "terminal", "setgroups", "die-with-parent"] {
        assert!(notes.contains(word), "{word} missing from:\n{notes}");
    }
    let e = export(&plan_for("strict").unwrap(), &target(false)).unwrap();
    let notes = e.notes.join("\n");
    for word in ["loopback", "nested user namespaces", "32-bit"] {
        assert!(notes.contains(word), "{word} missing from:\n{notes}");
    }
}

#[test]
fn a_bundle_records_its_start_before_the_command_and_walks_the_project_after_it() {
    let written = std::time::UNIX_EPOCH + std::time::Duration::new(1_800_000_000, 123_456_789);
    let t = Target {
        hooks: Some(BundleHooks {
            exe: "/usr/bin/csbox".into(),
            written,
        }),
        ..target(true)
    };
    let plan = plan_for("default").unwrap();
    let e = export(&plan, &t).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&to_json(&e.spec).unwrap()).unwrap();
    let errors: Vec<String> = validator()
        .iter_errors(&doc)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let hooks = doc["hooks"].as_object().unwrap();
    let mut kinds: Vec<&str> = hooks.keys().map(String::as_str).collect();
    kinds.sort();
    // createRuntime runs on the host after the container is made, before its command;
    // prestart (deprecated) is not used.
    assert_eq!(kinds, ["createRuntime", "poststop"]);
    let args = |kind: &str| -> Vec<String> {
        assert_eq!(hooks[kind][0]["path"], "/usr/bin/csbox");
        serde_json::from_value(hooks[kind][0]["args"].clone()).unwrap()
    };
    let dir = plan.session.dir.display().to_string();
    assert_eq!(
        args("createRuntime"),
        ["csbox", "quarantine", "--dir", &dir, "--mark-start"]
    );
    let stop = args("poststop");
    assert_eq!(stop[..4], ["csbox", "quarantine", "--dir", &dir]);
    assert_eq!(stop[4], "--project");
    let view: crate::plan::ProjectView = serde_json::from_str(&stop[5]).unwrap();
    assert_eq!(Some(&view), plan.view.project.as_ref());
    assert_eq!(stop[6], "--bundle-written");
    // To the nanosecond: the baseline must not move later than the bundle's writing.
    assert_eq!(humantime::parse_rfc3339(&stop[7]).unwrap(), written);
    assert!(
        e.notes.iter().any(|n| n.contains("no live watch")),
        "{:#?}",
        e.notes
    );
}
