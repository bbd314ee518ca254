//! Configuration: defaults, and errors that name the field to fix.

use converge_server::config::Config;

use crate::support::admin_hash;

fn error_of(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn an_empty_file_gives_safe_defaults() {
    let config = Config::parse("").unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.session.idle_timeout_minutes, 30);
    assert!(!config.session.secure_cookie);
    assert!(config.users.is_empty());
}

#[test]
fn an_unknown_key_is_named() {
    let err = error_of("[server]\nlisn = \"127.0.0.1:1\"\n");
    assert!(err.contains("unknown field `lisn`"), "{err}");
    assert!(
        err.contains("listen"),
        "should suggest the valid keys: {err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_located() {
    let err = error_of("[session]\nidle_timeout_minutes = \"soon\"\n");
    assert!(err.contains("idle_timeout_minutes"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_bad_password_hash_names_the_user_entry() {
    let text = format!(
        "[[users]]\nusername = \"a\"\npassword_hash = \"{}\"\nrole = \"admin\"\n\n\
         [[users]]\nusername = \"b\"\npassword_hash = \"hunter2\"\nrole = \"operator\"\n",
        admin_hash()
    );
    let err = error_of(&text);
    assert!(err.starts_with("users[1].password_hash:"), "{err}");
    assert!(err.contains("converge hash-password"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the error must not echo the value: {err}"
    );
}

#[test]
fn role_and_projects_must_agree() {
    let user = |role: &str, projects: &str| {
        format!(
            "[[users]]\nusername = \"u\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n{projects}",
            admin_hash()
        )
    };
    let err = error_of(&user("tenant", ""));
    assert_eq!(
        err,
        "users[0].projects: a tenant needs at least one project"
    );
    let err = error_of(&user("operator", "projects = [\"x\"]\n"));
    assert!(err.starts_with("users[0].projects: only tenants"), "{err}");
    let err = error_of(&user("tenant", "projects = [\"x\", \" \"]\n"));
    assert!(err.starts_with("users[0].projects[1]"), "{err}");
    let err = error_of(&user("superuser", ""));
    assert!(err.contains("unknown variant `superuser`"), "{err}");
}

#[test]
fn usernames_are_unique() {
    let one = format!(
        "[[users]]\nusername = \"same\"\npassword_hash = \"{}\"\nrole = \"admin\"\n",
        admin_hash()
    );
    let err = error_of(&format!("{one}\n{one}"));
    assert!(err.starts_with("users[1].username:"), "{err}");
}

#[test]
fn zero_limits_are_refused() {
    let err = error_of("[login_throttle]\nmax_failures_per_user = 0\n");
    assert_eq!(
        err,
        "login_throttle.max_failures_per_user: must be greater than 0"
    );
    let err = error_of("[session]\nidle_timeout_minutes = 0\n");
    assert!(err.starts_with("session.idle_timeout_minutes"), "{err}");
}

#[test]
fn relative_paths_are_taken_from_the_config_file_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("converge.toml");
    std::fs::write(&path, "[database]\npath = \"state/c.db\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.database.path, dir.path().join("state/c.db"));
    assert_eq!(config.server.dist_dir, dir.path().join("dist"));
}

#[test]
fn a_missing_file_says_which() {
    let err = Config::load(std::path::Path::new("/nonexistent/converge.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/converge.toml"), "{err}");
}

#[test]
fn hosts_are_checked() {
    let err = error_of("[[hosts]]\nname = \"a b\"\nuri = \"qemu:///system\"\n");
    assert!(err.starts_with("hosts[0].name:"), "{err}");
    let err = error_of(
        "[[hosts]]\nname = \"a\"\nuri = \"qemu:///system\"\n[[hosts]]\nname = \"a\"\nuri = \"qemu:///system\"\n",
    );
    assert!(err.starts_with("hosts[1].name:"), "{err}");
    let err = error_of("[[hosts]]\nname = \"a\"\nuri = \"localhost\"\n");
    assert!(err.starts_with("hosts[0].uri:"), "{err}");
    let err = error_of("[[hosts]]\nname = \"a\"\n");
    assert!(err.contains("missing field `uri`"), "{err}");
}

#[test]
fn sampling_limits_are_checked() {
    let err = error_of("[sampler]\ninterval_ms = 5\n");
    assert_eq!(err, "sampler.interval_ms: must be between 50 and 10000");
    let config = Config::parse("[sampler]\ninterval_ms = 250\n").unwrap();
    assert_eq!(config.sampler.interval_ms, 250);
    assert_eq!(config.events.replay_buffer, 4096);
}

#[test]
fn presets_in_the_config_are_linted_like_a_start() {
    let err = error_of(
        "[[presets]]\nname = \"bad\"\ndescription = \"x\"\n[presets.settings.capabilities]\nxbzrle_cache_bytes = 67108864\nparallel_connections = 4\n",
    );
    assert!(
        err.starts_with("presets[0].settings.capabilities.parallel_connections:"),
        "{err}"
    );
    assert!(err.contains("xbzrle"), "{err}");
    let err =
        error_of("[[presets]]\nname = \"x\"\ndescription = \"x\"\n[presets.settings]\nwarp = 9\n");
    assert!(err.contains("unknown field `warp`"), "{err}");
    let err = error_of("[migrations]\ndefault_preset = \"nope\"\n");
    assert!(
        err.starts_with("migrations.default_preset: no preset called \"nope\""),
        "{err}"
    );
    let config = Config::parse("[migrations]\ndefault_preset = \"nova\"\n").unwrap();
    assert_eq!(config.migrations.default_preset, "nova");
}
