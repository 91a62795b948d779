//! The HTTP listener over TLS (`[http] tls = true`): the JSON API with
//! Basic credentials over HTTPS (Python's urllib verifying the
//! certificate), HTTP/2 by ALPN (hyper's client), credentials from a
//! non-loopback address accepted only with TLS, `/metrics` behind
//! `[http] metrics_auth`, and the command line reaching its daemon over
//! HTTPS.

mod imap_support;

use std::process::Command;
use std::sync::Arc;

use imap_support::{start_with, Gateway, Setup, PASSWORD};

/// A local address that is not loopback (the interface the default route
/// leaves by), if this machine has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// GET `url` with Python's urllib: (status, body). `cafile`: verify the
/// server against it; None: do not verify (a name the certificate is not
/// for).
fn urllib(
    url: &str,
    cafile: Option<&std::path::Path>,
    auth: Option<(&str, &str)>,
    bearer: Option<&str>,
) -> (u16, String) {
    let script = r#"
import base64, ssl, sys, urllib.request, urllib.error
url, cafile, user, pw, bearer = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
req = urllib.request.Request(url)
if user:
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
if bearer:
    req.add_header("Authorization", "Bearer " + bearer)
try:
    r = urllib.request.urlopen(req, context=ctx, timeout=20)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
    let (u, p) = auth.unwrap_or(("", ""));
    let out = Command::new("python3")
        .args(["-c", script, url])
        .arg(cafile.map(|c| c.display().to_string()).unwrap_or_default())
        .args([u, p, bearer.unwrap_or("")])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) =
        text.split_once('\n').unwrap_or_else(|| panic!("urllib: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (code.trim().parse().unwrap(), body.to_string())
}

/// `pecgate serve` with HTTPS on a free port and `/metrics` behind the
/// bearer token `metrics_token` (its file in the returned directory, which
/// must live as long as the gateway).
fn gateway(metrics_token: &str) -> (Gateway, u16, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("metrics-token");
    std::fs::write(&token_file, format!("{metrics_token}\n")).unwrap();
    let port = imap_support::free_port();
    let extra = format!(
        "[http]\nlisten = \"0.0.0.0:{port}\"\ntls = true\nmetrics_auth = {{ bearer_token_file = \"{}\" }}\n",
        token_file.display()
    );
    (start_with(Setup { inbox: 1, extra_config: extra, ..Setup::default() }), port, tmp)
}

#[test]
fn the_api_over_https_with_http2_and_metrics_behind_a_token() {
    let (gw, port, _tmp) = gateway("prom-Token-42");
    let cert = gw.cert();
    let base = format!("https://127.0.0.1:{port}");

    // HTTPS, the certificate verified; Basic credentials.
    let (code, body) = urllib(&format!("{base}/api/mailboxes"), Some(&cert), Some(("mario", PASSWORD)), None);
    assert_eq!(code, 200, "{body} / {}", gw.log());
    assert!(body.contains("prot"), "{body}");
    assert_eq!(urllib(&format!("{base}/api/mailboxes"), Some(&cert), Some(("mario", "wrong")), None).0, 401);

    // /metrics: the bearer token of metrics_auth, nothing else.
    assert_eq!(urllib(&format!("{base}/metrics"), Some(&cert), None, None).0, 401);
    assert_eq!(urllib(&format!("{base}/metrics"), Some(&cert), None, Some("nope")).0, 401);
    assert_eq!(urllib(&format!("{base}/metrics"), Some(&cert), Some(("mario", PASSWORD)), None).0, 401);
    let (code, body) = urllib(&format!("{base}/metrics"), Some(&cert), None, Some("prom-Token-42"));
    assert_eq!(code, 200);
    assert!(body.contains("pecgate_build_info"), "{body}");
    // Health checks stay open.
    assert_eq!(urllib(&format!("{base}/healthz"), Some(&cert), None, None).0, 200);

    // HTTP/2 by ALPN.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (version, status) = rt.block_on(async {
        // (The test certificate is self-signed, CA:TRUE: rustls would not
        // take it as a server's; pinned, as the command line does.)
        let mut cfg = (*pecgate::tls::client_config_pinned(&cert).unwrap()).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("https://127.0.0.1:{port}/healthz"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        (resp.version(), resp.status().as_u16())
    });
    assert_eq!((version, status), (hyper::Version::HTTP_2, 200));

    // With TLS, credentials are accepted from an address that is not
    // loopback (without TLS such a request gets 403: tests/ops.rs).
    match non_loopback_ip() {
        Some(ip) => {
            let (code, body) =
                urllib(&format!("https://{ip}:{port}/api/mailboxes"), None, Some(("mario", PASSWORD)), None);
            assert_eq!(code, 200, "from {ip}: {body}");
        }
        None => eprintln!(
            "NOTE: this machine has no non-loopback address; the rule is covered by \
             http::tests::credentials_from_any_address_only_with_tls"
        ),
    }

    // The command line reaches its daemon over HTTPS (the [tls]
    // certificate pinned, whatever name it is for).
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["campaign", "list", "--user", "mario", "--config"])
        .arg(&gw.config)
        .env("PECGATE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn without_tls_the_api_refuses_credentials_from_other_addresses() {
    let port = imap_support::free_port();
    let gw = start_with(Setup {
        inbox: 1,
        extra_config: format!("[http]\nlisten = \"0.0.0.0:{port}\"\n"),
        ..Setup::default()
    });
    let from_loopback =
        urllib(&format!("http://127.0.0.1:{port}/api/mailboxes"), None, Some(("mario", PASSWORD)), None);
    assert_eq!(from_loopback.0, 200, "{} / {}", from_loopback.1, gw.log());
    if let Some(ip) = non_loopback_ip() {
        let (code, body) = urllib(&format!("http://{ip}:{port}/api/mailboxes"), None, Some(("mario", PASSWORD)), None);
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("tls = true"), "{body}");
    }
}

fn pecgate(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate")).args(args).arg("--config").arg(&gw.config).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// API tokens: created once (stored hashed), accepted as `Bearer`, each
/// use audited under the token's name, refused at once when revoked or
/// expired.
#[test]
fn api_tokens_are_shown_once_audited_and_revocable() {
    let (gw, port, _tmp) = gateway("prom");
    let cert = gw.cert();
    let url = format!("https://127.0.0.1:{port}/api/mailboxes");

    let (ok, token, err) = pecgate(&gw, &["token", "create", "--user", "mario", "--name", "billing"]);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("pgt_") && token.len() > 60, "{token}");
    // Only the hash is kept.
    let stored = std::fs::read_to_string(gw.config.parent().unwrap().join("api-tokens.json")).unwrap();
    assert!(!stored.contains(&token) && stored.contains("\"billing\""), "{stored}");

    let (code, body) = urllib(&url, Some(&cert), None, Some(&token));
    assert_eq!(code, 200, "{body} / {}", gw.log());
    assert!(body.contains("prot"), "mario's mailboxes: {body}");
    assert_eq!(urllib(&url, Some(&cert), None, Some("pgt_0000")).0, 401);

    // Audited under the token's name.
    let (ok, out, err) = pecgate(&gw, &["audit", "query", "--user", "mario", "--format", "jsonl"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.contains("\"identity\":\"token billing\"") && l.contains("api GET /api/mailboxes")),
        "{out}"
    );

    // A second token with an expiry; revoking the first.
    let (ok, short, _) = pecgate(&gw, &["token", "create", "--user", "mario", "--name", "short", "--expires", "2s"]);
    assert!(ok);
    assert_eq!(urllib(&url, Some(&cert), None, Some(short.trim())).0, 200);
    let (ok, _, err) = pecgate(&gw, &["token", "revoke", "billing"]);
    assert!(ok, "{err}");
    let (code, body) = urllib(&url, Some(&cert), None, Some(&token));
    assert_eq!(code, 401, "revoked: {body}");
    assert!(body.contains("revoked"), "{body}");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (code, body) = urllib(&url, Some(&cert), None, Some(short.trim()));
    assert_eq!(code, 401, "expired: {body}");
    let (ok, list, _) = pecgate(&gw, &["token", "list"]);
    assert!(ok && list.contains("billing") && list.contains("revoked") && list.contains("expired"), "{list}");
    // A token for a user the configuration does not have is refused.
    let (ok, _, err) = pecgate(&gw, &["token", "create", "--user", "nobody", "--name", "x"]);
    assert!(!ok && err.contains("no user"), "{err}");
}

/// The certificate the HTTPS listener presents, as PEM (Python's ssl).
fn presented_cert(port: u16) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import ssl,sys; print(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().collect()
}

fn pem_body(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap().split_whitespace().collect()
}

/// The HTTPS listener takes a renewed certificate on SIGHUP, like IMAP.
#[test]
fn a_renewed_certificate_is_served_after_sighup() {
    let (gw, port, _tmp) = gateway("prom");
    assert_eq!(presented_cert(port), pem_body(&gw.cert()));
    let (cert, key) = (gw.cert(), gw.dir.path().join("key.pem"));
    imap_support::selfsigned::certificate(&cert, &key);
    let renewed = pem_body(&cert);
    assert!(Command::new("kill").args(["-HUP", &gw.child.id().to_string()]).status().unwrap().success());
    let t0 = std::time::Instant::now();
    while presented_cert(port) != renewed {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "still the old certificate: {}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
