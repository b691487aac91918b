use super::*;

fn client(streams: &str) -> ClientConfig {
    client_with("", streams)
}

fn client_with(top: &str, streams: &str) -> ClientConfig {
    let src = format!("{top}\n[server]\nhostname = \"log\"\n{streams}");
    ClientConfig::from_toml_str(&src, "client.toml").unwrap()
}

fn server(src: &str) -> ServerConfig {
    ServerConfig::from_toml_str(src, "server.toml").unwrap()
}

const THREE: &str = r#"
[[stream]]
path = "/var/log/a.log"
[[stream]]
path = "/var/log/b.log"
svc = "b"
[[stream]]
directory = "/var/spool/x"
filepattern = "*.gz"
"#;

#[test]
fn the_same_client_config_changes_nothing() {
    let old = client(THREE);
    let mut new = client(THREE);
    let plan = client_plan(&old, &mut new);
    assert!(plan.streams.is_empty());
    assert_eq!(plan.streams.unchanged, vec![(0, 0), (1, 1), (2, 2)]);
    assert!(plan.shared.is_empty() && plan.restart_only.is_empty());
    assert_eq!(
        plan.summary(),
        "reload: 0 streams added, 0 removed, 0 changed, 3 unchanged"
    );
}

#[test]
fn streams_are_matched_by_where_they_read_not_by_place() {
    let old = client(THREE);
    // b.log moved first and its svc changed; a.log removed; c.log added;
    // the directory source unchanged; `//` in a path is the same path.
    let mut new = client(
        r#"
[[stream]]
path = "/var/log//b.log"
svc = "bee"
[[stream]]
directory = "/var/spool/x"
filepattern = "*.gz"
[[stream]]
path = "/var/log/c.log"
"#,
    );
    let plan = client_plan(&old, &mut new);
    assert_eq!(
        plan.streams,
        Diff {
            added: vec![2],
            removed: vec![0],
            changed: vec![(1, 0)],
            unchanged: vec![(2, 1)],
        }
    );
    assert_eq!(
        plan.summary(),
        "reload: 1 streams added, 1 removed, 1 changed, 1 unchanged"
    );
}

#[test]
fn every_stream_setting_is_a_change() {
    let base = "[[stream]]\npath = \"/l/a.log\"\n";
    for extra in [
        "method = \"send\"",
        "onrotate = \"stop\"",
        "svc = \"x\"",
        "meta = { env = \"prod\" }",
        "rate_limit = \"1MiB/s\"",
    ] {
        let old = client(base);
        let mut new = client(&format!("{base}{extra}\n"));
        let plan = client_plan(&old, &mut new);
        assert_eq!(plan.streams.changed, vec![(0, 0)], "{extra}");
    }
}

#[test]
fn a_glob_that_must_leave_a_new_literal_path_alone_is_changed() {
    let glob = "[[stream]]\npath = \"/l/*.log\"\n";
    let old = client(glob);
    let mut new = client(&format!("{glob}[[stream]]\npath = \"/l/a.log\"\n"));
    let plan = client_plan(&old, &mut new);
    assert_eq!(plan.streams.added, vec![1]);
    assert_eq!(plan.streams.changed, vec![(0, 0)]);
}

#[test]
fn a_shared_setting_changes_every_kept_stream() {
    let old = client(THREE);
    for (top, key) in [
        ("hostname = \"other\"", "hostname"),
        ("follow_symlinks = true", "follow_symlinks"),
    ] {
        let mut new = client_with(top, THREE);
        let plan = client_plan(&old, &mut new);
        assert_eq!(plan.shared, vec![key]);
        assert_eq!(plan.streams.changed.len(), 3);
        assert!(plan.summary().contains(&format!("({key} changed")));
    }
    let mut new = client_with("[tuning]\nlinger = \"1s\"", THREE);
    assert_eq!(client_plan(&old, &mut new).shared, vec!["[tuning]"]);
}

#[test]
fn client_restart_only_keys_keep_their_running_values() {
    let old = client_with("state_file = \"/a/state\"", THREE);
    let mut new = client_with(
        "state_file = \"/b/state\"\ndebug = true\nlog_format = \"json\"\n[prometheus]\nenabled = true",
        THREE,
    );
    let plan = client_plan(&old, &mut new);
    assert_eq!(
        plan.restart_only,
        vec!["state_file", "[prometheus]", "debug", "log_format"]
    );
    assert_eq!(new.state_file, PathBuf::from("/a/state"));
    assert!(!new.debug && !new.prometheus.enabled);
    assert!(plan.streams.is_empty(), "pinned keys change no stream");
}

const OUTPUTS: &str = r#"
listen = "127.0.0.1:9000"
directory = "/srv/logs"
[output.a]
path = "/srv/a/{host}.log"
[output.b]
path = "/srv/b/{host}.log"
match = { host = "web*" }
"#;

#[test]
fn outputs_are_matched_by_name() {
    let old = server(OUTPUTS);
    let mut new = server(
        r#"
listen = "127.0.0.1:9000"
directory = "/srv/logs"
[output.c]
path = "/srv/c/{host}.log"
[output.b]
path = "/srv/b/{host}.log"
match = { host = "db*" }
"#,
    );
    let plan = server_plan(&old, &mut new);
    assert_eq!(
        plan.outputs,
        Diff {
            added: vec![0],
            removed: vec![0],
            changed: vec![(1, 1)],
            unchanged: vec![],
        }
    );
    assert_eq!(
        plan.summary(),
        "reload: 1 outputs added, 1 removed, 1 changed, 0 unchanged; nothing else changed"
    );
}

#[test]
fn limits_and_rules_are_named_when_they_change() {
    let old = server(OUTPUTS);
    let allow = "[[allow]]\naddress = \"127.0.0.1/32\"\nhosts = [\"*\"]\noutputs = [\"*\"]\n";
    let mut new = server(&format!("{OUTPUTS}{allow}"));
    assert_eq!(server_plan(&old, &mut new).changed, vec!["[[allow]]"]);
    let mut new = server(&format!(
        "max_connections = 10\nidle_timeout = \"1m\"\n{OUTPUTS}"
    ));
    let plan = server_plan(&old, &mut new);
    assert_eq!(plan.changed, vec!["max_connections", "idle_timeout"]);
    assert!(plan.outputs.is_empty());
    assert!(plan
        .summary()
        .ends_with("changed: max_connections, idle_timeout"));
}

#[test]
fn allow_rules_compare_by_their_text_in_order() {
    let rule = |addr: &str| {
        format!("[[allow]]\naddress = \"{addr}\"\nhosts = [\"*\"]\noutputs = [\"*\"]\n")
    };
    let one = server(&format!(
        "{OUTPUTS}{}{}",
        rule("10.0.0.0/8"),
        rule("127.0.0.1/32")
    ));
    let same = server(&format!(
        "{OUTPUTS}{}{}",
        rule("10.0.0.0/8"),
        rule("127.0.0.1/32")
    ));
    let swapped = server(&format!(
        "{OUTPUTS}{}{}",
        rule("127.0.0.1/32"),
        rule("10.0.0.0/8")
    ));
    assert!(same_rules(&one.auth.rules, &same.auth.rules));
    assert!(!same_rules(&one.auth.rules, &swapped.auth.rules));
    assert!(!same_rules(&one.auth.rules, &one.auth.rules[..1]));
}

#[test]
fn server_restart_only_keys_keep_their_running_values() {
    let old = server(OUTPUTS);
    let mut new = server(&OUTPUTS.replace("9000", "9001").replace(
        "directory = \"/srv/logs\"",
        "directory = \"/srv/logs\"\nsync = \"always\"\nstate_file = \"/x/state\"",
    ));
    let plan = server_plan(&old, &mut new);
    assert_eq!(plan.restart_only, vec!["listen", "state_file", "sync"]);
    assert_eq!(new.listen, old.listen);
    assert_eq!(new.state_path(), old.state_path());
    assert_eq!(new.sync, old.sync);
    assert!(plan.changed.is_empty() && plan.outputs.is_empty());
}

#[test]
fn a_new_directory_without_a_state_file_keeps_the_running_state_path() {
    let old = server(OUTPUTS);
    let mut new = server(&OUTPUTS.replace("/srv/logs", "/srv/other"));
    let plan = server_plan(&old, &mut new);
    assert_eq!(plan.restart_only, vec!["state_file"]);
    assert_eq!(plan.changed, vec!["directory"]);
    assert_eq!(new.state_path(), old.state_path());
}

#[test]
fn diff_of_empty_and_disjoint_lists() {
    let none: [u8; 0] = [];
    assert_eq!(Diff::of(&none, &none, |x| *x, |_, _| true), Diff::default());
    let d = Diff::of(&[1u8, 2], &[3u8], |x| *x, |_, _| true);
    assert_eq!(d.added, vec![0]);
    assert_eq!(d.removed, vec![0, 1]);
    assert!(!d.is_empty());
}
