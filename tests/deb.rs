//! The Debian package, built with `scripts/deb` (cargo-deb) from the
//! release binary, installed on this machine with `dpkg -i`: its files,
//! the `pecgate` system user, `/var/lib/pecgate`, `check-config` on the
//! installed example, `systemd-analyze verify` on the unit; then `dpkg -r`
//! (the configuration and the archive stay) and `dpkg --purge` (the
//! configuration goes, the archive stays: it is evidence).
//!
//! Needs root (dpkg); CI runs the suite as root.

use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_checks_and_removes_cleanly() {
    let uid = ok("id", &["-u"]);
    assert_eq!(uid.trim(), "0", "this test installs a package with dpkg: run the suite as root (CI does)");
    // A left-over from an interrupted run would hide what this one installs.
    let _ = run("dpkg", &["--purge", "pecgate"]);

    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash").arg(Path::new(root).join("scripts/deb")).arg(out.path()).output().unwrap();
    assert!(o.status.success(), "scripts/deb: {}", String::from_utf8_lossy(&o.stderr));
    let deb = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(deb.ends_with("_amd64.deb") && Path::new(&deb).exists(), "{deb}");
    let name = Path::new(&deb).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("pecgate_{}", env!("CARGO_PKG_VERSION"))), "{name}");

    ok("dpkg", &["-i", &deb]);
    // The files where an administrator expects them.
    for f in [
        "/usr/bin/pecgate",
        "/lib/systemd/system/pecgate.service",
        "/etc/pecgate/pecgate.toml",
        "/usr/share/pecgate/prometheus/pecgate-alerts.yml",
        "/usr/share/pecgate/grafana/pecgate.json",
        "/usr/lib/sysusers.d/pecgate.conf",
        "/usr/share/man/man1/pecgate.1.gz",
        "/usr/share/man/man1/pecgate-serve.1.gz",
        "/usr/share/man/man1/pecgate-users-show.1.gz",
    ] {
        assert!(Path::new(f).exists(), "{f} missing after dpkg -i");
    }
    assert!(ok("/usr/bin/pecgate", &["--version"]).contains(env!("CARGO_PKG_VERSION")));
    let unit = std::fs::read_to_string("/lib/systemd/system/pecgate.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/pecgate serve --config /etc/pecgate/pecgate.toml"), "{unit}");
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    let conffiles = ok("dpkg-query", &["--showformat=${Conffiles}", "--show", "pecgate"]);
    assert!(conffiles.contains("/etc/pecgate/pecgate.toml"), "{conffiles}");
    // The system user, the archive's directory, the configuration readable
    // by the daemon's group only.
    assert!(ok("getent", &["passwd", "pecgate"]).contains("/var/lib/pecgate"));
    assert_eq!(ok("stat", &["-c", "%U:%G %a", "/var/lib/pecgate"]).trim(), "pecgate:pecgate 750");
    assert_eq!(ok("stat", &["-c", "%U:%G %a", "/etc/pecgate/pecgate.toml"]).trim(), "root:pecgate 640");

    // check-config on the installed example: it parses, and what it
    // reports are only the site's own files and secrets.
    let o = run("/usr/bin/pecgate", &["check-config", "--config", "/etc/pecgate/pecgate.toml"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!text.contains("cannot parse") && !text.contains("unknown field"), "{text}");
    for line in text.lines().filter(|l| l.trim_start().starts_with("- ") || l.contains(": ")) {
        let site = ["password_file", "password_hash", "tls.cert", "tls.key"].iter().any(|k| line.contains(k));
        assert!(site, "unexpected problem in the installed example: {line}\n{text}");
    }

    // The unit as systemd reads it.
    let o = run("systemd-analyze", &["verify", "/lib/systemd/system/pecgate.service"]);
    let text = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "systemd-analyze verify: {text}");
    assert!(!text.contains("pecgate.service:"), "systemd-analyze has remarks on the unit: {text}");

    // Remove: the program goes, the configuration and the archive stay.
    std::fs::write("/var/lib/pecgate/keep-me", b"evidence").unwrap();
    ok("dpkg", &["-r", "pecgate"]);
    assert!(!Path::new("/usr/bin/pecgate").exists());
    assert!(Path::new("/etc/pecgate/pecgate.toml").exists(), "dpkg -r keeps the configuration");
    assert!(Path::new("/var/lib/pecgate/keep-me").exists(), "dpkg -r keeps the archive");
    // Purge: the configuration goes; the archive stays (it is evidence).
    ok("dpkg", &["--purge", "pecgate"]);
    assert!(!Path::new("/etc/pecgate/pecgate.toml").exists(), "dpkg --purge removes the configuration");
    assert!(Path::new("/var/lib/pecgate/keep-me").exists(), "the archive is never removed by the package");
    let _ = std::fs::remove_dir_all("/var/lib/pecgate");
}
