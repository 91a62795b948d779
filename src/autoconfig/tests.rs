//! Each document parsed back and checked field by field, and what broke
//! other servers' autoconfig.

use std::collections::BTreeMap;

use super::*;

fn offer(login: LoginForm) -> Offer {
    Offer {
        domains: vec!["comune.example.it".into(), "pec.comune.example.it".into()],
        host: "mail.comune.example.it".into(),
        login,
        display_name: None,
        imap: Some(Service { port: 993, implicit_tls: true }),
        smtp: Some(Service { port: 465, implicit_tls: true }),
        https_port: 443,
    }
}

fn get(o: &Offer, method: &str, path: &str, query: &[(&str, &str)], host: Option<&str>, body: &[u8]) -> Answer {
    let q: BTreeMap<String, String> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    respond(o, &Request { method, path, query: &q, host, body })
}

/// Every text of elements named `name`, in document order.
fn texts(xml: &str, name: &str) -> Vec<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut out, mut inside) = (Vec::new(), false);
    loop {
        match r.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(e) => inside = e.local_name().as_ref() == name,
            quick_xml::events::Event::Text(t) if inside => out.push(t.xml10_content().into_owned()),
            quick_xml::events::Event::End(_) => inside = false,
            quick_xml::events::Event::Eof => return out,
            _ => {}
        }
    }
}

#[test]
fn thunderbird_with_an_address() {
    let a = get(
        &offer(LoginForm::LocalPart),
        "GET",
        "/mail/config-v1.1.xml",
        &[("emailaddress", "Mario.Rossi@Comune.Example.it")],
        None,
        b"",
    );
    assert_eq!(a.status, 200);
    assert_eq!(texts(&a.body, "hostname"), ["mail.comune.example.it", "mail.comune.example.it"]);
    assert_eq!(texts(&a.body, "port"), ["993", "465"]);
    assert_eq!(texts(&a.body, "socketType"), ["SSL", "SSL"]);
    assert_eq!(texts(&a.body, "authentication"), ["password-cleartext", "password-cleartext"]);
    assert_eq!(texts(&a.body, "username"), ["Mario.Rossi", "Mario.Rossi"]);
    assert_eq!(texts(&a.body, "domain"), ["comune.example.it", "pec.comune.example.it"]);
    assert!(a.body.contains("<incomingServer type=\"imap\">") && a.body.contains("<outgoingServer type=\"smtp\">"));
    // The whole address as the login.
    let a = get(
        &offer(LoginForm::Address),
        "GET",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        &[("emailaddress", "m@comune.example.it")],
        None,
        b"",
    );
    assert_eq!(texts(&a.body, "username"), ["m@comune.example.it", "m@comune.example.it"]);
}

/// Thunderbird on Android asks without `emailaddress`: placeholders, not
/// 400; the domain from the `autoconfig.` host name.
#[test]
fn thunderbird_without_an_address_gets_placeholders() {
    let o = offer(LoginForm::LocalPart);
    let a = get(&o, "GET", "/mail/config-v1.1.xml", &[], Some("autoconfig.pec.comune.example.it"), b"");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(texts(&a.body, "username"), ["%EMAILLOCALPART%", "%EMAILLOCALPART%"]);
    assert!(a.body.contains("emailProvider id=\"pec.comune.example.it\""));
    let a = get(
        &offer(LoginForm::Address),
        "GET",
        "/mail/config-v1.1.xml",
        &[("emailaddress", "")],
        Some("autoconfig.comune.example.it"),
        b"",
    );
    assert_eq!(texts(&a.body, "username"), ["%EMAILADDRESS%", "%EMAILADDRESS%"]);
    // Two domains and a host that names neither: which one is unknown.
    assert_eq!(get(&o, "GET", "/mail/config-v1.1.xml", &[], Some("mail.comune.example.it"), b"").status, 404);
    let mut one = offer(LoginForm::LocalPart);
    one.domains.truncate(1);
    assert_eq!(get(&one, "GET", "/mail/config-v1.1.xml", &[], None, b"").status, 200);
}

/// Unknown domains get 404; an address's user part never changes the
/// answer's shape (no enumeration).
#[test]
fn unknown_domains_are_not_found_and_users_are_never_confirmed() {
    let o = offer(LoginForm::LocalPart);
    for path in ["/mail/config-v1.1.xml", "/autoconfig/apple.mobileconfig"] {
        assert_eq!(get(&o, "GET", path, &[("emailaddress", "x@other.example")], None, b"").status, 404, "{path}");
    }
    let pox = |addr: &str| {
        format!("<?xml version=\"1.0\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>{addr}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>")
    };
    assert_eq!(
        get(&o, "POST", "/autodiscover/autodiscover.xml", &[], None, pox("x@other.example").as_bytes()).status,
        404
    );
    let a = get(&o, "POST", "/autodiscover/autodiscover.xml", &[], None, pox("nessuno@comune.example.it").as_bytes());
    let b = get(&o, "POST", "/autodiscover/autodiscover.xml", &[], None, pox("mario@comune.example.it").as_bytes());
    assert_eq!(a.status, 200);
    assert_eq!(a.body.replace("nessuno", "X"), b.body.replace("mario", "X"));
    // Malformed addresses and bodies: 404, never a panic.
    for bad in ["", "@comune.example.it", "a b@comune.example.it", "noatsign"] {
        assert_eq!(
            get(&o, "GET", "/mail/config-v1.1.xml", &[("emailaddress", bad)], Some("x"), b"").status,
            404,
            "{bad:?}"
        );
    }
    for body in [&b"<Autodiscover><Request><EMailAddress>"[..], b"\xff\xfe", b"<<<", b""] {
        assert_eq!(get(&o, "POST", "/autodiscover/autodiscover.xml", &[], None, body).status, 404);
    }
}

/// Outlook POX: `<SSL>on</SSL>` on the implicit-TLS ports and no
/// `<Encryption>` element (with `<Encryption>TLS</Encryption>` Outlook
/// tried STARTTLS on 993 and 465).
#[test]
fn outlook_pox_says_ssl_and_no_encryption_element() {
    let o = offer(LoginForm::Address);
    let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>mario.rossi@comune.example.it</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>";
    // Paths in any case.
    for path in ["/autodiscover/autodiscover.xml", "/AutoDiscover/AutoDiscover.xml", "/Autodiscover/Autodiscover.XML"] {
        assert!(is_endpoint(path), "{path}");
        let a = get(&o, "POST", path, &[], None, body);
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(texts(&a.body, "Type"), ["IMAP", "SMTP"]);
        assert_eq!(texts(&a.body, "Server"), ["mail.comune.example.it", "mail.comune.example.it"]);
        assert_eq!(texts(&a.body, "Port"), ["993", "465"]);
        assert_eq!(texts(&a.body, "SSL"), ["on", "on"]);
        assert_eq!(texts(&a.body, "LoginName"), ["mario.rossi@comune.example.it", "mario.rossi@comune.example.it"]);
        assert_eq!(texts(&a.body, "AuthRequired"), ["on", "on"]);
        assert!(texts(&a.body, "Encryption").is_empty(), "{}", a.body);
        assert!(a.body.contains("outlook/responseschema/2006a"));
    }
    // STARTTLS listeners only: then SSL off and Encryption TLS.
    let mut st = o.clone();
    st.imap = Some(Service { port: 143, implicit_tls: false });
    let a = get(&st, "POST", "/autodiscover/autodiscover.xml", &[], None, body);
    assert_eq!(texts(&a.body, "SSL"), ["off", "on"]);
    assert_eq!(texts(&a.body, "Encryption"), ["TLS"]);
}

/// Outlook's JSON Autodiscover, `AutodiscoverV1` in any case.
#[test]
fn outlook_json_points_at_the_pox_document() {
    let o = offer(LoginForm::LocalPart);
    for proto in ["AutodiscoverV1", "autodiscoverv1", "Autodiscoverv1"] {
        let a = get(
            &o,
            "GET",
            "/autodiscover/autodiscover.json/v1.0/mario%40comune.example.it",
            &[("Protocol", proto)],
            None,
            b"",
        );
        assert_eq!(a.status, 200, "{proto}: {}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["Protocol"], "AutodiscoverV1");
        assert_eq!(v["Url"], "https://mail.comune.example.it/autodiscover/autodiscover.xml");
    }
    let a = get(
        &o,
        "GET",
        "/Autodiscover/Autodiscover.json/v1.0/mario@comune.example.it",
        &[("protocol", "ActiveSync")],
        None,
        b"",
    );
    assert_eq!(a.status, 400);
    let a = get(
        &o,
        "GET",
        "/autodiscover/autodiscover.json/v1.0/mario@other.example",
        &[("Protocol", "AutodiscoverV1")],
        None,
        b"",
    );
    assert_eq!(a.status, 404);
    let mut p = o.clone();
    p.https_port = 8443;
    let a = get(
        &p,
        "GET",
        "/autodiscover/autodiscover.json/v1.0/m@comune.example.it",
        &[("Protocol", "AutodiscoverV1")],
        None,
        b"",
    );
    assert!(a.body.contains("https://mail.comune.example.it:8443/"), "{}", a.body);
}

#[test]
fn apple_profile_is_a_plist_with_one_imap_account() {
    let o = offer(LoginForm::LocalPart);
    let a = get(&o, "GET", "/autoconfig/apple.mobileconfig", &[("emailaddress", "mario@comune.example.it")], None, b"");
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/x-apple-aspen-config");
    assert!(a.headers.iter().any(|(k, v)| *k == "content-disposition" && v.contains(".mobileconfig")));
    // key → value pairs of the mail payload, read back.
    let keys = texts(&a.body, "key");
    let strings = texts(&a.body, "string");
    let integers = texts(&a.body, "integer");
    for k in [
        "EmailAddress",
        "IncomingMailServerHostName",
        "IncomingMailServerPortNumber",
        "IncomingMailServerUseSSL",
        "OutgoingMailServerPortNumber",
        "IncomingMailServerUsername",
        "PayloadUUID",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing");
    }
    assert!(strings.iter().any(|s| s == "mario@comune.example.it"));
    assert!(strings.iter().any(|s| s == "mario"), "the login is the local part");
    assert!(strings.iter().any(|s| s == "mail.comune.example.it"));
    assert!(strings.iter().any(|s| s == "com.apple.mail.managed") && strings.iter().any(|s| s == "EmailTypeIMAP"));
    assert!(integers.contains(&"993".to_string()) && integers.contains(&"465".to_string()));
    // The same address gets the same identifiers (iOS replaces, not adds).
    let b = get(&o, "GET", "/autoconfig/apple.mobileconfig", &[("emailaddress", "mario@comune.example.it")], None, b"");
    assert_eq!(a.body, b.body);
    let uuid = strings.iter().find(|s| s.len() == 36 && s.matches('-').count() == 4).expect("a UUID");
    assert_eq!(&uuid[14..15], "4");
}

#[test]
fn dns_records_name_the_certificate_host() {
    let r = dns_records(&offer(LoginForm::LocalPart));
    assert!(r.contains("_imaps._tcp.comune.example.it. 3600 IN SRV 0 1 993 mail.comune.example.it."), "{r}");
    assert!(r.contains("_submissions._tcp.comune.example.it. 3600 IN SRV 0 1 465 mail.comune.example.it."), "{r}");
    assert!(r.contains("_imap._tcp.comune.example.it. 3600 IN SRV 0 0 0 ."), "no STARTTLS offered: {r}");
    assert!(r.contains("autoconfig.pec.comune.example.it. 3600 IN CNAME mail.comune.example.it."), "{r}");
    assert!(r.contains("_autodiscover._tcp.comune.example.it. 3600 IN SRV 0 1 443 mail.comune.example.it."), "{r}");
}
