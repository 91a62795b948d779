//! Mail-client setup documents served by `pecgate serve` over HTTPS, read
//! the way clients read them: Python's urllib verifying the certificate,
//! `xml.etree` for Thunderbird's and Outlook's documents, `plistlib` for
//! the Apple profile (the format iOS and macOS load); `pecgate autoconfig
//! dns`; `check-config` naming a host the certificate is not for.
//!
//! Thunderbird itself is not driven here (no display, and account
//! creation has no command-line interface); each field it reads is checked
//! instead, and the cases that broke other servers are unit tests in
//! `src/autoconfig/tests.rs`.

mod imap_support;

use std::process::Command;

use imap_support::{start_with, Gateway, Setup};
use serde_json::Value;

const CLIENT: &str = r#"
import json, plistlib, ssl, sys, urllib.request, urllib.error
import xml.etree.ElementTree as ET
port, cafile = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
base = f"https://127.0.0.1:{port}"

def fetch(path, data=None, host=None):
    req = urllib.request.Request(base + path, data=data)
    if host:
        req.add_header("Host", host)
    if data:
        req.add_header("Content-Type", "text/xml")
    try:
        r = urllib.request.urlopen(req, context=ctx, timeout=20)
        return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()

out = {}
# Thunderbird, with an address and (as on Android) without one.
for key, path, host in [
    ("tb", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=mario.rossi%40comune.example.it", None),
    ("tb_android", "/mail/config-v1.1.xml", "autoconfig.comune.example.it"),
]:
    st, ct, body = fetch(path, host=host)
    root = ET.fromstring(body)
    servers = []
    for s in root.iter():
        if s.tag in ("incomingServer", "outgoingServer"):
            servers.append({"type": s.get("type"), **{c.tag: c.text for c in s}})
    out[key] = {"status": st, "servers": servers}
# Outlook: the JSON redirect, then the POX document it names.
st, ct, body = fetch("/autodiscover/autodiscover.json/v1.0/mario.rossi@comune.example.it?Protocol=Autodiscoverv1")
out["json"] = {"status": st, "body": json.loads(body)}
req = b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>mario.rossi@comune.example.it</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>'
st, ct, body = fetch("/AutoDiscover/AutoDiscover.xml", data=req)
ns = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
root = ET.fromstring(body)
out["pox"] = {"status": st, "protocols": [{c.tag.replace(ns, ""): c.text for c in p} for p in root.iter(ns + "Protocol")]}
# Apple: the profile as plistlib (what iOS/macOS load) reads it.
st, ct, body = fetch("/autoconfig/apple.mobileconfig?emailaddress=mario.rossi%40comune.example.it")
out["apple"] = {"status": st, "type": ct, "plist": plistlib.loads(body)}
# An unknown domain.
out["unknown"] = fetch("/mail/config-v1.1.xml?emailaddress=x%40elsewhere.example")[0]
print(json.dumps(out))
"#;

fn gateway() -> (Gateway, u16, u16) {
    let http = imap_support::free_port();
    let smtp = imap_support::free_port();
    let extra = format!(
        "[smtp]\nlisten = [\"0.0.0.0:{smtp}\"]\n\n[http]\nlisten = \"127.0.0.1:{http}\"\ntls = true\n\n\
         [autoconfig]\ndomains = [\"comune.example.it\"]\nhost = \"127.0.0.1\"\ndisplay_name = \"PEC del Comune\"\n"
    );
    (start_with(Setup { inbox: 1, extra_config: extra, ..Setup::default() }), http, smtp)
}

#[test]
fn clients_read_their_setup_documents_over_https() {
    let (gw, http, smtp) = gateway();
    let out = Command::new("python3").args(["-c", CLIENT, &http.to_string()]).arg(gw.cert()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} / {} / {}", String::from_utf8_lossy(&out.stderr), gw.log()));
    let (imap, smtp) = (gw.port.to_string(), smtp.to_string());

    for key in ["tb", "tb_android"] {
        let t = &v[key];
        assert_eq!(t["status"], 200, "{key}: {t}");
        let s = t["servers"].as_array().unwrap();
        assert_eq!(s.len(), 2, "{t}");
        assert_eq!((s[0]["type"].as_str(), s[0]["hostname"].as_str()), (Some("imap"), Some("127.0.0.1")));
        assert_eq!((s[0]["port"].as_str(), s[0]["socketType"].as_str()), (Some(imap.as_str()), Some("SSL")));
        assert_eq!((s[1]["type"].as_str(), s[1]["port"].as_str()), (Some("smtp"), Some(smtp.as_str())));
        assert_eq!(s[1]["socketType"], "SSL");
        assert_eq!(s[0]["authentication"], "password-cleartext");
    }
    assert_eq!(v["tb"]["servers"][0]["username"], "mario.rossi");
    assert_eq!(v["tb_android"]["servers"][0]["username"], "%EMAILLOCALPART%");

    assert_eq!(v["json"]["status"], 200);
    assert_eq!(v["json"]["body"]["Protocol"], "AutodiscoverV1");
    assert_eq!(v["json"]["body"]["Url"], format!("https://127.0.0.1:{http}/autodiscover/autodiscover.xml"));
    assert_eq!(v["pox"]["status"], 200);
    let p = v["pox"]["protocols"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(
        (p[0]["Type"].as_str(), p[0]["Port"].as_str(), p[0]["SSL"].as_str()),
        (Some("IMAP"), Some(imap.as_str()), Some("on"))
    );
    assert_eq!(
        (p[1]["Type"].as_str(), p[1]["Port"].as_str(), p[1]["SSL"].as_str()),
        (Some("SMTP"), Some(smtp.as_str()), Some("on"))
    );
    assert_eq!(p[0]["LoginName"], "mario.rossi");
    assert!(p.iter().all(|x| x.get("Encryption").is_none()), "no Encryption element: {p:?}");

    let a = &v["apple"];
    assert_eq!(a["status"], 200);
    assert_eq!(a["type"], "application/x-apple-aspen-config");
    assert_eq!(a["plist"]["PayloadType"], "Configuration");
    let m = &a["plist"]["PayloadContent"][0];
    assert_eq!(m["PayloadType"], "com.apple.mail.managed");
    assert_eq!(m["EmailAccountType"], "EmailTypeIMAP");
    assert_eq!(m["EmailAddress"], "mario.rossi@comune.example.it");
    assert_eq!(m["IncomingMailServerHostName"], "127.0.0.1");
    assert_eq!(m["IncomingMailServerPortNumber"].to_string(), imap);
    assert_eq!(m["IncomingMailServerUseSSL"], true);
    assert_eq!(m["OutgoingMailServerPortNumber"].to_string(), smtp);
    assert_eq!(m["IncomingMailServerUsername"], "mario.rossi");
    assert_eq!(m["EmailAccountName"], "PEC del Comune");

    assert_eq!(v["unknown"], 404);

    // The DNS records to add.
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["autoconfig", "dns", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let dns = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(dns.contains(&format!("_imaps._tcp.comune.example.it. 3600 IN SRV 0 1 {imap} 127.0.0.1.")), "{dns}");
    assert!(dns.contains(&format!("_submissions._tcp.comune.example.it. 3600 IN SRV 0 1 {smtp} 127.0.0.1.")), "{dns}");
    assert!(dns.contains("autoconfig.comune.example.it. 3600 IN CNAME 127.0.0.1."), "{dns}");
}

/// One host name for every domain gave other servers certificate errors:
/// `check-config` says when `host` is not a name the certificate is for.
#[test]
fn check_config_names_a_host_the_certificate_is_not_for() {
    let (gw, _, _) = gateway();
    let cfg = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace("host = \"127.0.0.1\"", "host = \"mail.comune.example.it\"");
    std::fs::write(&gw.config, cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pecgate"))
        .args(["check-config", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("autoconfig.host") && text.contains("certificate is for 127.0.0.1"), "{text}");
}
