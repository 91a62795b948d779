//! `pecgate demo`: a complete, throw-away installation in one command.
//!
//! It starts a throw-away Dovecot holding two simulated PEC mailboxes
//! (Dovecot must be installed: the simulator needs a real IMAP server for
//! the mailboxes pecgate syncs from, and pecgate's own IMAP server serves
//! the archive, not provider mailboxes), the PEC provider simulator
//! in-process, and the gateway itself (`serve`) with self-signed TLS, two
//! PEC mailboxes and two users. It prints how to connect mail clients (Thunderbird, swaks),
//! writes the same as JSON to `<data-dir>/demo.json`, sends a welcome PEC so
//! the folders are not empty, and runs until Ctrl-C.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::json;

const DOMAIN: &str = "pec.demo.test";
/// (alias, local part, Dovecot user)
const MAILBOXES: [(&str, &str); 2] = [("protocollo", "protocollo"), ("legale", "ufficio.legale")];

fn password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, what: &str, child: Option<&mut Child>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                bail!("{what} exited ({st}) before listening on port {port}");
            }
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A Dovecot run by the demo, stopped on drop.
struct Dovecot {
    child: Child,
    port: u16,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn id(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("id").args(args).output().context("running id")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Start Dovecot with one user per `(name, password)`, maildirs under `dir`.
fn start_dovecot(dir: &Path, users: &[(String, String)]) -> anyhow::Result<Dovecot> {
    let bin = which("dovecot").context(
        "`pecgate demo` needs Dovecot for the simulated provider's mailboxes, and `dovecot` is not on PATH \
         (Debian/Ubuntu: apt-get install dovecot-imapd)",
    )?;
    std::fs::create_dir_all(dir)?;
    for sub in ["run", "state", "home"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let root = libc_geteuid() == 0;
    let (login, internal, group, uid, gid) = if root {
        // Dovecot refuses to run login and mail processes as root.
        let uid: u32 = id(&["-u", "dovecot"])?.parse().context("no `dovecot` system user")?;
        let gid: u32 = id(&["-g", "dovecot"])?.parse().context("no `dovecot` system group")?;
        std::os::unix::fs::chown(dir.join("home"), Some(uid), Some(gid))?;
        ("dovenull".to_string(), "dovecot".to_string(), "dovecot".to_string(), uid, gid)
    } else {
        let me = id(&["-un"])?;
        let (uid, gid) = (id(&["-u"])?.parse()?, id(&["-g"])?.parse()?);
        (me.clone(), me, id(&["-gn"])?, uid, gid)
    };
    for p in [dir.to_path_buf(), dir.join("run"), dir.join("state"), dir.join("home")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut passwd = String::new();
    for (u, p) in users {
        writeln!(passwd, "{u}:{{PLAIN}}{p}:{uid}:{gid}::{}::", dir.join("home").join(u).display())?;
    }
    std::fs::write(dir.join("passwd"), passwd)?;
    std::fs::set_permissions(dir.join("passwd"), std::fs::Permissions::from_mode(0o644))?;
    let port = free_port()?;
    let r = dir.display();
    let conf = format!(
        "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\n\
         default_login_user = {login}\ndefault_internal_user = {internal}\ndefault_internal_group = {group}\n\
         first_valid_uid = {uid}\nlast_valid_uid = 0\nfirst_valid_gid = 1\nlast_valid_gid = 0\n\
         mail_location = maildir:~/Maildir\nmail_save_crlf = yes\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\nssl = no\n\
         passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {r}/passwd\n}}\nuserdb {{\n  driver = passwd-file\n  args = {r}/passwd\n}}\n\
         service anvil {{\n  chroot =\n}}\nservice imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
           inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
    );
    let conf_path = dir.join("dovecot.conf");
    std::fs::write(&conf_path, conf)?;
    let mut child = Command::new(bin)
        .args(["-F", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dovecot")?;
    if let Err(e) = wait_port(port, "dovecot", Some(&mut child)) {
        let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
        let _ = child.kill();
        bail!("{e}\n{log}");
    }
    Ok(Dovecot { child, port })
}

fn libc_geteuid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Ports of the gateway's client listeners, from `base`.
struct Ports {
    imaps: u16,
    imap: u16,
    smtps: u16,
    submission: u16,
}

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
    };
    // Provider mailboxes (Dovecot users) with their provider passwords;
    // kept across runs with the same data dir.
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
    let dv_users: Vec<(String, String)> =
        MAILBOXES.iter().map(|(alias, _)| Ok((alias.to_string(), secret("provider", alias)?))).collect::<anyhow::Result<_>>()?;
    let dovecot = start_dovecot(&dir.join("provider-mailboxes"), &dv_users)?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // The simulated provider.
        let sim_port = free_port()?;
        let sim_cfg = crate::sim::SimConfig {
            listen: format!("127.0.0.1:{sim_port}"),
            domains: vec![DOMAIN.into()],
            pki_dir: dir.join("provider-pki"),
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
                        imap_port: dovecot.port,
                        imap_user: alias.to_string(),
                        imap_password: secret("provider", alias)?,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let (sim_stop, sim_rx) = tokio::sync::watch::channel(false);
        let sim = crate::sim::start(sim_cfg, sim_rx).await?;

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
             [smtp]\nlisten = [\"127.0.0.1:{}\"]\nlisten_starttls = [\"127.0.0.1:{}\"]\n\n",
            dir.join("archive").display(),
            sim.ca_file.display(),
            cert.display(),
            key.display(),
            ports.imaps,
            ports.imap,
            ports.smtps,
            ports.submission
        );
        for (alias, local) in MAILBOXES {
            write!(
                cfg,
                "[[mailbox]]\nalias = \"{alias}\"\naddress = \"{local}@{DOMAIN}\"\nusername = \"{alias}\"\npassword = \"{pw}\"\n\
                 imap = {{ host = \"127.0.0.1\", port = {imap}, tls = \"none\" }}\nsmtp = {{ host = \"127.0.0.1\", port = {sim_port}, tls = \"none\" }}\n\
                 poll_interval = \"2s\"\n\n",
                pw = secret("provider", alias)?,
                imap = dovecot.port,
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
        let config_path = dir.join("pecgate.toml");
        std::fs::write(&config_path, cfg)?;
        crate::daemon::load_config(&config_path)?;

        let serve = tokio::spawn(crate::daemon::serve(config_path.clone()));
        let smtps = ports.smtps;
        tokio::task::spawn_blocking(move || wait_port(smtps, "pecgate", None)).await??;

        let info = json!({
            "data_dir": dir,
            "config": config_path,
            "ca_file": ca_file,
            "host": "127.0.0.1",
            "imap": { "port_tls": ports.imaps, "port_starttls": ports.imap },
            "smtp": { "port_tls": ports.smtps, "port_starttls": ports.submission },
            "users": [
                { "name": "mario", "password": secret("users", "mario")?, "can_send_from": [format!("protocollo@{DOMAIN}"), format!("ufficio.legale@{DOMAIN}")], "folders": ["protocollo/…", "legale/…"] },
                { "name": "anna", "password": secret("users", "anna")?, "can_send_from": [], "folders": ["legale/… (read only)"] },
            ],
            "mailboxes": MAILBOXES.iter().map(|(a, l)| json!({"alias": a, "address": format!("{l}@{DOMAIN}")})).collect::<Vec<_>>(),
            "simulated_provider": { "smtp": sim.addr.to_string(), "domain": DOMAIN, "ca_file": sim.ca_file },
        });
        std::fs::write(dir.join("demo.json"), serde_json::to_vec_pretty(&info)?)?;
        print_instructions(&info, &ports);

        // A welcome PEC, so folders are not empty.
        if let Err(e) = welcome(&ca_file, ports.smtps, &secret("users", "mario")?).await {
            eprintln!("(the welcome PEC could not be sent: {e:#})");
        }
        let result = serve.await;
        let _ = sim_stop.send(true);
        let _ = sim.task.await;
        drop(dovecot);
        result??;
        anyhow::Ok(())
    })
}

fn print_instructions(info: &serde_json::Value, p: &Ports) {
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
         Thunderbird: add a mail account with the settings above; import {ca} as a CA (Settings > Certificates > Authorities).\n\n\
         swaks (send a PEC from protocollo to the legal office):\n\
         \x20 swaks --server 127.0.0.1:{smtps} --tls-on-connect --auth PLAIN --auth-user mario --auth-password {mario} \\\n\
         \x20       --from protocollo@{DOMAIN} --to ufficio.legale@{DOMAIN} --header 'Subject: Prova PEC'\n\n\
         The same settings are in {dir}/demo.json\n",
        dir = info["data_dir"].as_str().unwrap_or(""),
        imaps = p.imaps,
        imap = p.imap,
        smtps = p.smtps,
        sub = p.submission,
        mario = pw(0),
        anna = pw(1),
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
