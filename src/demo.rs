//! `pecgate demo`: a complete, throw-away installation in one command,
//! with nothing to install beside pecgate itself.
//!
//! It starts, in this one process, the PEC provider simulator with two
//! simulated PEC mailboxes (kept in a pecgate archive of its own under
//! `<data-dir>/provider/` and served over IMAP on loopback by pecgate's own
//! IMAP server code, see `sim::mailstore`), and the gateway itself (`serve`)
//! configured against it, with self-signed TLS, two PEC mailboxes and two
//! users. It prints how to connect mail clients (Thunderbird, mbsync,
//! swaks), writes the same as JSON to `<data-dir>/demo.json` (and a ready
//! mbsync configuration to `<data-dir>/mbsyncrc`), sends a welcome PEC so
//! the folders are not empty, and runs until Ctrl-C.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::json;

const DOMAIN: &str = "pec.demo.test";
/// The staff's own mail domain: `mario@comune.demo.test` is what a person
/// types into a mail client that sets itself up (`[autoconfig]`).
const STAFF_DOMAIN: &str = "comune.demo.test";
/// (alias, local part); the alias is also the mailbox's login at the
/// simulated provider.
const MAILBOXES: [(&str, &str); 2] = [("protocollo", "protocollo"), ("legale", "ufficio.legale")];

fn password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Ports of the gateway's client listeners, from `base`.
struct Ports {
    imaps: u16,
    imap: u16,
    smtps: u16,
    submission: u16,
    /// The HTTP API (campaigns) and metrics.
    http: u16,
}

/// The simulated citizens' PEC domain of the demo's campaign: who gets a
/// delivery receipt, a full mailbox or an unknown address.
const CITIZENS: &str = "cittadini.demo";
const CITIZENS_SCRIPT: &str = r#"
[[remote]]
domain = "cittadini.demo"
[[remote.rule]]
pattern = "pieno*"
outcome = "full"
[[remote.rule]]
pattern = "ignoto*"
outcome = "unknown"
[[remote.rule]]
pattern = "*"
outcome = "delivered"
delay = "3s"
"#;

pub fn run(data_dir: Option<PathBuf>, base_port: u16) -> anyhow::Result<()> {
    let throwaway = data_dir.is_none();
    let dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pecgate-demo-{}-{}", std::process::id(), password().to_lowercase()))
    });
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    let result = run_in(&dir, base_port);
    if throwaway {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(dir: &Path, base_port: u16) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let ports = Ports {
        imaps: base_port.checked_add(993).context("--base-port too large")?,
        imap: base_port.checked_add(143).context("--base-port too large")?,
        smtps: base_port.checked_add(465).context("--base-port too large")?,
        submission: base_port.checked_add(587).context("--base-port too large")?,
        http: base_port.checked_add(9180).context("--base-port too large")?,
    };
    // Provider mailboxes with their provider passwords, and the users'
    // passwords; kept across runs with the same data dir.
    let secrets_path = dir.join("demo-secrets.json");
    let secrets: serde_json::Value = match std::fs::read(&secrets_path) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => {
            let v = json!({
                "provider": { "protocollo": password(), "legale": password() },
                "users": { "mario": password(), "anna": password() },
            });
            std::fs::write(&secrets_path, serde_json::to_vec_pretty(&v)?)?;
            std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o600))?;
            v
        }
    };
    let secret = |a: &str, b: &str| secrets[a][b].as_str().map(str::to_string).context("demo-secrets.json is damaged");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // The simulated provider: SMTP submission, and its mailboxes in its
        // own archive served over IMAP (plain, on loopback).
        let (sim_port, sim_imap_port) = (free_port()?, free_port()?);
        let provider_dir = dir.join("provider");
        let sim_cfg = crate::sim::SimConfig {
            listen: format!("127.0.0.1:{sim_port}"),
            domains: vec![DOMAIN.into()],
            pki_dir: provider_dir.join("pki"),
            provider_name: "pecgate demo PEC provider".into(),
            receipt_delay: Duration::from_secs(2),
            failure_rate: 0.0,
            max_message_size: 50 * 1024 * 1024,
            mailboxes: MAILBOXES
                .iter()
                .map(|(alias, local)| {
                    Ok(crate::sim::SimMailbox {
                        address: format!("{local}@{DOMAIN}"),
                        password: secret("provider", alias)?,
                        imap_host: "127.0.0.1".into(),
                        imap_port: sim_imap_port,
                        imap_user: alias.to_string(),
                        imap_password: secret("provider", alias)?,
                        quota_messages: None,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            mailstore: Some(crate::sim::mailstore::MailStoreConfig {
                data_dir: provider_dir.join("mailboxes"),
                imap_listen: format!("127.0.0.1:{sim_imap_port}"),
            }),
        };
        let (sim_stop, sim_rx) = tokio::sync::watch::channel(false);
        let script: crate::sim::campaign::Campaign = config::Config::builder()
            .add_source(config::File::from_str(CITIZENS_SCRIPT, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())?;
        let script = script.compile(&[DOMAIN.to_string()]).map_err(anyhow::Error::msg)?;
        let sim = crate::sim::start(crate::sim::SimSettings { provider: sim_cfg, script }, sim_rx).await?;

        // TLS for the gateway's listeners (kept across runs).
        let tls_dir = dir.join("tls");
        let (ca_file, cert, key) = (tls_dir.join("ca.pem"), tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
        if !key.exists() {
            std::fs::create_dir_all(&tls_dir)?;
            let c = crate::sim::pki::server_cert_for_ip("127.0.0.1")?;
            std::fs::write(&ca_file, c.ca)?;
            std::fs::write(&cert, c.chain)?;
            std::fs::write(&key, c.key)?;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        }

        // The gateway's configuration.
        let mut cfg = format!(
            "# written by `pecgate demo`\n[store]\ndata_dir = \"{}\"\n\n[pec]\ntrust_store = \"{}\"\n\n\
             [upstream]\ntimeout = \"30s\"\nmin_backoff = \"1s\"\nmax_backoff = \"10s\"\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[imap]\nlisten = [\"127.0.0.1:{}\"]\nlisten_starttls = [\"127.0.0.1:{}\"]\n\n\
             [smtp]\nlisten = [\"127.0.0.1:{}\"]\nlisten_starttls = [\"127.0.0.1:{}\"]\n\n[http]\nlisten = \"127.0.0.1:{}\"\ntls = true\n\n\
             [autoconfig]\ndomains = [\"{STAFF_DOMAIN}\"]\nhost = \"127.0.0.1\"\ndisplay_name = \"PEC demo\"\n\n",
            dir.join("archive").display(),
            sim.ca_file.display(),
            cert.display(),
            key.display(),
            ports.imaps,
            ports.imap,
            ports.smtps,
            ports.submission,
            ports.http
        );
        for (alias, local) in MAILBOXES {
            write!(
                cfg,
                "[[mailbox]]\nalias = \"{alias}\"\naddress = \"{local}@{DOMAIN}\"\nusername = \"{alias}\"\npassword = \"{pw}\"\n\
                 imap = {{ host = \"127.0.0.1\", port = {imap}, tls = \"none\" }}\nsmtp = {{ host = \"127.0.0.1\", port = {sim_port}, tls = \"none\" }}\n\
                 poll_interval = \"2s\"\ndefault_office = \"segreteria\"\ndefault_due = \"30d\"\n\n",
                pw = secret("provider", alias)?,
                imap = sim_imap_port,
            )?;
        }
        let users = [
            ("mario", "protocollo = [\"read\", \"triage\", \"send\"], legale = [\"read\", \"triage\", \"send\"]", "protocollo"),
            ("anna", "legale = [\"read\"]", "legale"),
        ];
        for (name, grants, default) in users {
            let hash = crate::auth::hash_password(&secret("users", name)?)?;
            write!(
                cfg,
                "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ndefault_mailbox = \"{default}\"\ngrants = {{ {grants} }}\n\n"
            )?;
        }
        // Handling: every certified message arriving goes to the office
        // "segreteria" (mario), so legale/To handle shows the welcome PEC.
        cfg.push_str("[[office]]\nname = \"segreteria\"\nmembers = [\"mario\"]\n\n");
        let config_path = dir.join("pecgate.toml");
        std::fs::write(&config_path, cfg)?;
        crate::daemon::load_config(&config_path)?;

        let serve = tokio::spawn(crate::daemon::serve(config_path.clone()));
        let smtps = ports.smtps;
        tokio::task::spawn_blocking(move || wait_port(smtps, "pecgate")).await??;

        // mbsync, ready to run: mario's folders into a Maildir.
        let mbsyncrc = dir.join("mbsyncrc");
        let maildir = dir.join("mbsync-maildir");
        let mbsync = mbsync_config(ports.imaps, "mario", &secret("users", "mario")?, &ca_file, &maildir);
        std::fs::create_dir_all(&maildir)?;
        std::fs::write(&mbsyncrc, &mbsync)?;
        std::fs::set_permissions(&mbsyncrc, std::fs::Permissions::from_mode(0o600))?;

        let info = json!({
            "data_dir": dir,
            "config": config_path,
            "ca_file": ca_file,
            "host": "127.0.0.1",
            "imap": { "port_tls": ports.imaps, "port_starttls": ports.imap },
            "smtp": { "port_tls": ports.smtps, "port_starttls": ports.submission },
            "http": {
                "port": ports.http,
                "tls": true,
                "autoconfig": autoconfig_url(ports.http, "mario"),
                "autodiscover": format!("https://127.0.0.1:{}/autodiscover/autodiscover.xml", ports.http),
                "apple_profile": format!("https://127.0.0.1:{}/autoconfig/apple.mobileconfig?emailaddress=mario%40{STAFF_DOMAIN}", ports.http),
            },
            "users": [
                { "name": "mario", "password": secret("users", "mario")?, "can_send_from": [format!("protocollo@{DOMAIN}"), format!("ufficio.legale@{DOMAIN}")], "folders": ["protocollo/…", "legale/…"] },
                { "name": "anna", "password": secret("users", "anna")?, "can_send_from": [], "folders": ["legale/… (read only)"] },
            ],
            "mailboxes": MAILBOXES.iter().map(|(a, l)| json!({"alias": a, "address": format!("{l}@{DOMAIN}")})).collect::<Vec<_>>(),
            "mbsync": {
                "config": mbsyncrc,
                "maildir": maildir,
                "command": format!("mbsync -c {} -a", mbsyncrc.display()),
            },
            "simulated_provider": {
                "smtp": sim.addr.to_string(),
                "imap": sim.imap_addr.map(|a| a.to_string()),
                "mailboxes_dir": provider_dir.join("mailboxes"),
                "domain": DOMAIN,
                "ca_file": sim.ca_file,
            },
        });
        // A small campaign to try: five notices to simulated citizens.
        let mut csv = String::from("verbale;nome;pec;importo\n");
        for (i, (name, pec)) in [
            ("Mario Bianchi", "mario.bianchi"),
            ("Giulia Verdi", "giulia.verdi"),
            ("Luca Neri", "pieno.luca"),
            ("Sara Gialli", "ignoto.sara"),
            ("Anna Blu", "anna.blu"),
        ]
        .iter()
        .enumerate()
        {
            csv.push_str(&format!("V-2026-{:04};{name};{pec}@{CITIZENS};{},00\n", i + 1, 80 + 20 * i));
        }
        std::fs::write(dir.join("campaign-recipients.csv"), csv)?;
        std::fs::write(
            dir.join("campaign-template.txt"),
            "Subject: Notifica verbale n. {{verbale}}\n\nGentile {{nome}},\nle notifichiamo il verbale n. {{verbale}} di {{importo}} euro.\n",
        )?;
        std::fs::write(dir.join("demo.json"), serde_json::to_vec_pretty(&info)?)?;
        print_instructions(&info, &ports, &mbsync);

        // A welcome PEC, so folders are not empty.
        if let Err(e) = welcome(&ca_file, ports.smtps, &secret("users", "mario")?).await {
            eprintln!("(the welcome PEC could not be sent: {e:#})");
        }
        let result = serve.await;
        let _ = sim_stop.send(true);
        let _ = sim.task.await;
        result??;
        anyhow::Ok(())
    })
}

/// Where Thunderbird finds the settings for `user@STAFF_DOMAIN` (it asks
/// `autoconfig.<domain>`; here the listener is on loopback).
fn autoconfig_url(port: u16, user: &str) -> String {
    format!("https://127.0.0.1:{port}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={user}%40{STAFF_DOMAIN}")
}

/// An mbsync (isync 1.4) configuration syncing every folder of `user` into
/// a Maildir under `maildir`. `SubFolders Verbatim` lets the near side hold
/// the nested folders (`legale/Anomalies`); `SyncState *` keeps mbsync's
/// state inside that Maildir; the CA file is trusted for the demo's
/// certificate (issued for 127.0.0.1, the host dialled).
fn mbsync_config(port: u16, user: &str, password: &str, ca: &Path, maildir: &Path) -> String {
    let (ca, md) = (ca.display(), maildir.display());
    format!(
        "IMAPAccount pecgate-demo\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass {password}\nSSLType IMAPS\n\
         CertificateFile {ca}\nAuthMechs LOGIN\n\n\
         IMAPStore pecgate-demo-remote\nAccount pecgate-demo\n\n\
         MaildirStore pecgate-demo-local\nPath {md}/\nInbox {md}/INBOX\nSubFolders Verbatim\n\n\
         Channel pecgate-demo\nFar :pecgate-demo-remote:\nNear :pecgate-demo-local:\nPatterns *\nCreate Near\n\
         Sync All\nExpunge None\nSyncState *\n"
    )
}

fn print_instructions(info: &serde_json::Value, p: &Ports, mbsync: &str) {
    let pw = |i: usize| info["users"][i]["password"].as_str().unwrap_or("").to_string();
    let ca = info["ca_file"].as_str().unwrap_or("");
    println!(
        "\npecgate demo is running (Ctrl-C to stop). Everything lives in {dir}\n\n\
         Server: 127.0.0.1 (certificate for the IP address, signed by the CA in {ca})\n\
         \x20 IMAP  port {imaps} (SSL/TLS)   or {imap} (STARTTLS)\n\
         \x20 SMTP  port {smtps} (SSL/TLS)   or {sub} (STARTTLS)   authentication: normal password\n\n\
         Users:\n\
         \x20 mario / {mario}   read, triage and send on protocollo@{DOMAIN} and ufficio.legale@{DOMAIN}\n\
         \x20 anna  / {anna}   read only on ufficio.legale@{DOMAIN}\n\n\
         Thunderbird: add a mail account with the settings above; import {ca} as a CA (Settings > Certificates > Authorities).\n\
         Clients that set themselves up (address mario@{STAFF_DOMAIN}) read, over HTTPS on port {http}:\n\
         \x20 {autoconfig}\n\
         \x20 (Outlook: POST https://127.0.0.1:{http}/autodiscover/autodiscover.xml; iPhone/Mac: {apple})\n\n\
         Handling: certified messages arriving go to the office segreteria (mario). Drag the welcome PEC\n\
         from legale/To handle into legale/Mine to take it in charge, then into legale/Done; see\n\
         `pecgate handling report --config {dir}/pecgate.toml`.\n\n\
         swaks (send a PEC from protocollo to the legal office):\n\
         \x20 swaks --server 127.0.0.1:{smtps} --tls-on-connect --auth PLAIN --auth-user mario --auth-password {mario} \\\n\
         \x20       --from protocollo@{DOMAIN} --to ufficio.legale@{DOMAIN} --header 'Subject: Prova PEC'\n\n\
         A campaign (five certified notices to simulated citizens; one mailbox full, one address unknown):\n\
         \x20 export PECGATE_PASSWORD={mario}\n\
         \x20 pecgate campaign create --config {dir}/pecgate.toml --user mario --mailbox protocollo --name Prova \\\n\
         \x20       --recipients {dir}/campaign-recipients.csv --template {dir}/campaign-template.txt --start\n\
         \x20 pecgate campaign status --config {dir}/pecgate.toml --user mario ID\n\
         \x20 pecgate campaign report --config {dir}/pecgate.toml --user mario ID --fallback\n\n\
         Full-text search (Italian word forms: 'benvenuti' finds the welcome PEC's 'Benvenuto'):\n\
         \x20 pecgate search --config {dir}/pecgate.toml --user mario benvenuti\n\n\
         mbsync (mario's folders into {dir}/mbsync-maildir): run\n\
         \x20 mbsync -c {dir}/mbsyncrc -a\n\
         with this configuration (written there; put it in ~/.mbsyncrc to use it as is):\n\
         ----- mbsyncrc -----\n{mbsync}----- end -----\n\n\
         The same settings are in {dir}/demo.json\n",
        dir = info["data_dir"].as_str().unwrap_or(""),
        imaps = p.imaps,
        imap = p.imap,
        smtps = p.smtps,
        sub = p.submission,
        mario = pw(0),
        anna = pw(1),
        http = p.http,
        autoconfig = autoconfig_url(p.http, "mario"),
        apple = info["http"]["apple_profile"].as_str().unwrap_or(""),
    );
}

/// Send the welcome PEC through the gateway, as mario would.
async fn welcome(ca_file: &Path, port: u16, password: &str) -> anyhow::Result<()> {
    let tls = crate::tls::client_config(Some(ca_file))?;
    let body = format!(
        "From: Protocollo <protocollo@{DOMAIN}>\r\nTo: ufficio.legale@{DOMAIN}\r\nSubject: Benvenuto in pecgate\r\n\
         Message-ID: <welcome.{}@pecgate.demo>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Questa PEC e' passata da pecgate: trovi la copia in protocollo/Sent con il suo stato di consegna,\r\n\
         le ricevute in protocollo/Receipts e la busta in legale/INBOX.\r\n",
        chrono::Utc::now().timestamp(),
        chrono::Utc::now().to_rfc2822()
    );
    let mut client = mail_send::SmtpClientBuilder::new_with_tls_connector("127.0.0.1", port, tokio_rustls::TlsConnector::from(tls))
        .credentials(("mario", password))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let from = format!("protocollo@{DOMAIN}");
    let to = format!("ufficio.legale@{DOMAIN}");
    client
        .send(mail_send::smtp::message::Message::new(from.as_str(), [to.as_str()], body.trim_end_matches("\r\n").as_bytes()))
        .await?;
    let _ = client.quit().await;
    Ok(())
}
