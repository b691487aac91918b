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
        let text = text.replace(&format!("/usr/local/bin/{name}"), bin);
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

#[test]
fn the_logrotate_sample_rotates_server_outputs_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    let dest = routed(&out, "h", &log);
    // The sample as shipped, pointed at this server's output and pid.
    let sample = std::fs::read_to_string("etc/logrotate.d/loghamsterd").unwrap();
    let conf: String = sample
        .lines()
        .map(|l| {
            if l.starts_with("/var/log/loghamster/") {
                format!("{} {{", dest.display())
            } else if l.trim_start().starts_with("create ") {
                "    create".to_string()
            } else if l.contains("systemctl kill --signal=HUP loghamsterd.service") {
                format!("        kill -HUP {}", server.proc.pid())
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(
        conf.contains("kill -HUP"),
        "the sample's postrotate line changed"
    );
    let conf_path = tmp.path().join("logrotate.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let mut n = 0;
    for r in 0..5 {
        append_lines(&log, "o", n, n + 1000);
        n += 1000;
        wait_for("the lines in the current output", || {
            read(&dest).ends_with(&line("o", n - 1))
        });
        let st = Command::new("/usr/sbin/logrotate")
            .arg("-f")
            .arg("-s")
            .arg(tmp.path().join("status"))
            .arg(&conf_path)
            .output()
            .expect("logrotate runs (.ci/run installs it)");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        wait_for("the server to reopen its output", || {
            server.proc.log().matches("SIGHUP: reopened").count() > r
        });
    }
    append_lines(&log, "o", n, n + 1000);
    n += 1000;
    wait_for("the last lines in the new output", || {
        read(&dest).ends_with(&line("o", n - 1))
    });
    // Oldest first: app.log.5.gz ... app.log.2.gz, app.log.1, app.log.
    let mut all = String::new();
    for k in (1..=5).rev() {
        let plain = dest.with_extension(format!("log.{k}"));
        let gz = dest.with_extension(format!("log.{k}.gz"));
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
