//! The operations files in `etc/`: systemd units that `systemd-analyze
//! verify` accepts, and the logrotate sample for the server's outputs,
//! run for real against a running server.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn systemd_units_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED systemd_units_verify_cleanly: systemd-analyze not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (unit, bin) in [
        ("loghamsterd.service", SERVER_BIN),
        ("loghamsterc.service", CLIENT_BIN),
    ] {
        let text = std::fs::read_to_string(Path::new("etc/systemd").join(unit)).unwrap();
        let name = unit.trim_end_matches(".service");
        // Point ExecStart at the binary just built (verify checks it exists).
        let text = text.replace(&format!("/usr/bin/{name}"), bin);
        let path = tmp.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
    }
}

/// The sample as shipped, its globs moved from /var/log/loghamster to
/// `out`, its owners dropped (the test is not root everywhere) and its
/// postrotate pointed at `pid`.
fn logrotate_sample_for(out: &Path, pid: u32) -> String {
    let sample = std::fs::read_to_string("etc/logrotate.d/loghamsterd").unwrap();
    let root = format!("{}/", out.display());
    let conf: String = sample
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if l.starts_with("/var/log/loghamster/") {
                l.replace("/var/log/loghamster/", &root)
            } else if t.starts_with("create ") {
                "    create".to_string()
            } else if t.starts_with("createolddir ") {
                "    createolddir".to_string()
            } else if l.contains("systemctl kill --signal=HUP loghamsterd.service") {
                format!("        kill -HUP {pid}")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(conf.contains("kill -HUP"), "the postrotate line changed");
    assert!(conf.contains(&format!("{root}*/* ")), "the globs changed");
    conf
}

fn logrotate(conf: &Path, state: &Path, flag: &str) -> String {
    let st = Command::new("/usr/sbin/logrotate")
        .args([flag, "-s"])
        .arg(state)
        .arg(conf)
        .output()
        .expect("logrotate runs (.ci/run installs it)");
    let said = String::from_utf8_lossy(&st.stderr).into_owned();
    assert!(st.status.success(), "{said}");
    said
}

/// The default route's layout (`<host>/<client path>`, several levels
/// deep, a name without `.log`) is what the sample's globs match: rotated
/// five times under a running server, SIGHUP after each, shipping on; the
/// rotated files (in `.rotated/`, never rotated again) and the current
/// one hold every line once, in order.
#[test]
fn the_logrotate_sample_rotates_server_outputs_without_loss() {
    // No dot in the path: a glob's `*` does not match a leading dot.
    let tmp = tempfile::Builder::new().prefix("lh").tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("var/log/syslog");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let server = Server::with_directory(&out);
    let dest = routed(&out, "h", &log);
    let conf_path = tmp.path().join("logrotate.conf");
    std::fs::write(&conf_path, logrotate_sample_for(&out, server.proc.pid())).unwrap();
    let status = tmp.path().join("status");
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let mut n = 0;
    for r in 0..5 {
        append_lines(&log, "o", n, n + 1000);
        n += 1000;
        wait_for("the lines in the current output", || {
            read(&dest).ends_with(&line("o", n - 1))
        });
        if r == 0 {
            let said = logrotate(&conf_path, &status, "-d");
            let considered = format!("considering log {}", dest.display());
            assert!(said.contains(&considered), "{considered} not in:\n{said}");
        }
        logrotate(&conf_path, &status, "-f");
        wait_for("the server to reopen its output", || {
            server.proc.log().matches("SIGHUP: reopened").count() > r
        });
    }
    append_lines(&log, "o", n, n + 1000);
    n += 1000;
    wait_for("the last lines in the new output", || {
        read(&dest).ends_with(&line("o", n - 1))
    });
    // Oldest first: syslog.5.gz ... syslog.2.gz, syslog.1, syslog.
    let old = dest.parent().unwrap().join(".rotated");
    let mut names: Vec<String> = std::fs::read_dir(&old)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want = [
        "syslog.1",
        "syslog.2.gz",
        "syslog.3.gz",
        "syslog.4.gz",
        "syslog.5.gz",
    ];
    assert_eq!(names, want, "rotated files");
    let mut all = String::new();
    for k in (1..=5).rev() {
        let plain = old.join(format!("syslog.{k}"));
        let gz = old.join(format!("syslog.{k}.gz"));
        if gz.exists() {
            let o = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
            all += &String::from_utf8(o.stdout).unwrap();
        } else {
            all += &read(&plain);
        }
    }
    all += &read(&dest);
    assert!(
        all == expected("o", 0, n),
        "{}",
        describe_difference(&all, &expected("o", 0, n))
    );
    assert!(client.stop().success());
}

/// `kill -HUP` (what every service manager sends for reload) used to kill
/// loghamsterc with exit 129, which systemd counts as a clean stop. It now
/// keeps running and writes its state file at once; streams named on the
/// command line have no file to reload (see tests/reload.rs for a
/// configuration file). Lines written after it still arrive.
#[test]
fn sighup_keeps_the_client_running_and_saves_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let log = tmp.path().join("app.log");
    append_lines(&log, "hup", 0, 100);
    let state = tmp.path().join("state");
    let mut client = client_for(&server, &state, "h", &[&log]);
    let routed = routed(&out, "h", &log);
    wait_content(&routed, &expected("hup", 0, 100));
    let _ = std::fs::remove_file(&state);
    client.signal("HUP");
    client.wait_log("SIGHUP: state file saved");
    assert!(state.exists(), "the state file is written on SIGHUP");
    append_lines(&log, "hup", 100, 200);
    wait_content(&routed, &expected("hup", 0, 200));
    assert!(client.stop().success(), "a clean stop after SIGHUP");
}
