//! End-to-end IMAP features over imaplib against `pecgate serve`:
//! the PEC delivery state as `$Pec*` keywords with the virtual
//! `Undelivered` folder (tests/imap/pec_state.py), and the STARTTLS upgrade
//! with LOGINDISABLED before it (tests/imap/starttls.py).

mod imap_support;

use imap_support::{start_with, Setup};

fn run(gw: &imap_support::Gateway, script: &str, extra: &[&str]) {
    let (ok, out, err) = gw.python(script, extra);
    assert!(
        ok,
        "{script} failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        gw.log()
    );
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn pec_keywords_and_undelivered_folder() {
    let mut gw = start_with(Setup {
        inbox: 1,
        pec: true,
        extra_config: "[pec]\noverdue_after = \"1h\"\n".into(),
        ..Setup::default()
    });
    run(&gw, "pec_state.py", &[]);
    gw.stop();
    let mut journal = String::new();
    for e in std::fs::read_dir(gw.data().join("journal")).expect("journal dir") {
        journal += &std::fs::read_to_string(e.expect("entry").path()).expect("segment");
    }
    // Reading through the virtual folder is audited under its own name.
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\"op\":\"read\"") && l.contains("\"folder\":\"Undelivered\"")),
        "no read record for Undelivered"
    );
    // No $Pec keyword ever reached the stored (shared) flags, while the
    // ordinary ones did.
    let changes: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("\"type\":\"flags-changed\""))
        .collect();
    assert!(
        changes.iter().any(|l| l.contains("$Sollecitare")),
        "no flags-changed record for $Sollecitare: {changes:?}"
    );
    assert!(
        !journal
            .lines()
            .any(|l| l.contains("\"type\":\"flags-changed\"") && l.contains("$Pec")),
        "a $Pec keyword was stored"
    );
}

#[test]
fn starttls_upgrade_and_logindisabled() {
    let gw = start_with(Setup {
        inbox: 2,
        starttls: true,
        ..Setup::default()
    });
    let port = gw.starttls_port.expect("starttls port").to_string();
    run(&gw, "starttls.py", &[&port]);
}

#[test]
fn quota_reports_the_archive() {
    let gw = start_with(Setup {
        inbox: 3,
        imap_config: "quota_kib = 1048576\n".into(),
        ..Setup::default()
    });
    let bytes: u64 = gw.blobs.iter().map(|b| b.size).sum();
    let used = bytes.div_ceil(1024).to_string();
    run(&gw, "quota.py", &[&used, "1048576"]);
}

#[test]
fn quota_without_a_limit_has_no_root() {
    let gw = start_with(Setup {
        inbox: 1,
        ..Setup::default()
    });
    run(&gw, "quota.py", &["0", "none"]);
}

#[test]
fn copy_across_mailboxes_only() {
    let hash = pecgate::auth::hash_password(imap_support::PASSWORD).expect("hash");
    let mut extra = String::new();
    for (name, grants) in [
        ("capo", "prot = [\"read\", \"triage\"], tributi = [\"read\", \"triage\"]"),
        ("rotri", "prot = [\"read\", \"triage\"], tributi = [\"read\"]"),
    ] {
        extra += &format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"prot\"\ngrants = {{ {grants} }}\n\n");
    }
    let mut gw = start_with(Setup {
        inbox: 2,
        extra_config: extra,
        ..Setup::default()
    });
    run(&gw, "copy.py", &[]);
    gw.stop();
    let mut journal = String::new();
    for e in std::fs::read_dir(gw.data().join("journal")).expect("journal dir") {
        journal += &std::fs::read_to_string(e.expect("entry").path()).expect("segment");
    }
    // The copy is recorded as capo's, naming the source mailbox.
    assert!(
        journal.lines().any(|l| l.contains("\"op\":\"copy\"")
            && l.contains("\"actor\":\"capo\"")
            && l.contains("\"mailbox\":\"prot\"")
            && l.contains("tributi")),
        "no copy record by capo from prot to tributi"
    );
    pecgate::store::rebuild_index(&gw.data(), &mut |_, _| {}).expect("rebuild index");
}
