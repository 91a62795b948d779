//! Mail clients that set themselves up from an address: Thunderbird's
//! autoconfig (`config-v1.1.xml`), Outlook's Autodiscover (the POX
//! `autodiscover.xml` and the JSON `autodiscover.json` redirect), an Apple
//! configuration profile (`.mobileconfig`) for iPhone and Mac Mail, and the
//! DNS records that point clients here (RFC 6186 SRV, the `autoconfig` and
//! `autodiscover` names).
//!
//! Pure: [`respond`] turns a request into a document; `http` serves it.
//! An answer never depends on whether the address belongs to a user (no
//! enumeration): only the domain decides (unknown domains get 404).

pub mod cli;

use std::collections::BTreeMap;

use crate::config::{AutoconfigConfig, Config, LoginForm};
use crate::export::xml::Xml;

/// How one protocol is offered: port and whether it is implicit TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub port: u16,
    /// Implicit TLS (993, 465); false: STARTTLS (143, 587).
    pub implicit_tls: bool,
}

/// What the documents offer, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub domains: Vec<String>,
    /// The host clients connect to: the name the certificate is for.
    pub host: String,
    pub login: LoginForm,
    pub display_name: Option<String>,
    pub imap: Option<Service>,
    pub smtp: Option<Service>,
    /// The HTTPS port of this listener (for Outlook's redirect to the POX
    /// document).
    pub https_port: u16,
}

fn port_of(listen: &str) -> Option<u16> {
    listen.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

fn service(implicit: &[String], starttls: &[String], public: Option<u16>) -> Option<Service> {
    let found = implicit
        .first()
        .and_then(|l| port_of(l))
        .map(|port| Service { port, implicit_tls: true })
        .or_else(|| starttls.first().and_then(|l| port_of(l)).map(|port| Service { port, implicit_tls: false }))?;
    Some(Service { port: public.unwrap_or(found.port), ..found })
}

impl Offer {
    /// From a validated configuration with `[autoconfig]` (None without).
    pub fn from_config(cfg: &Config) -> Option<Offer> {
        let a: &AutoconfigConfig = cfg.autoconfig.as_ref()?;
        let imap = cfg.imap.as_ref().and_then(|i| service(&i.listen, &i.listen_starttls, a.imap_port));
        let smtp = cfg.smtp.as_ref().and_then(|s| service(&s.listen, &s.listen_starttls, a.smtp_port));
        let https_port = a.https_port.or_else(|| cfg.http.as_ref().and_then(|h| port_of(&h.listen))).unwrap_or(443);
        Some(Offer {
            domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            host: a.host.clone(),
            login: a.login,
            display_name: a.display_name.clone(),
            imap,
            smtp,
            https_port,
        })
    }

    fn serves(&self, domain: &str) -> Option<&str> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().find(|x| **x == d).map(String::as_str)
    }

    /// The domain of `address`, if served here.
    fn domain_of(&self, address: &str) -> Option<&str> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        if local.is_empty() || local.len() > 64 || local.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return None;
        }
        self.serves(domain)
    }

    /// The login name for `address`, or the placeholder Thunderbird fills in.
    fn username(&self, address: Option<&str>) -> String {
        match (self.login, address) {
            (LoginForm::LocalPart, Some(a)) => a.trim().rsplit_once('@').map(|(l, _)| l).unwrap_or(a).to_string(),
            (LoginForm::Address, Some(a)) => a.trim().to_string(),
            (LoginForm::LocalPart, None) => "%EMAILLOCALPART%".into(),
            (LoginForm::Address, None) => "%EMAILADDRESS%".into(),
        }
    }

    fn https_base(&self) -> String {
        if self.https_port == 443 {
            format!("https://{}", self.host)
        } else {
            format!("https://{}:{}", self.host, self.https_port)
        }
    }
}

/// An answer: status, content type, body, extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

fn answer(status: u16, content_type: &'static str, body: String) -> Answer {
    Answer { status, content_type, body, headers: Vec::new() }
}

fn not_found() -> Answer {
    answer(404, "text/plain; charset=utf-8", "no configuration for this domain\n".into())
}

/// A request as `http` hands it over.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a BTreeMap<String, String>,
    /// The Host header, without port.
    pub host: Option<&'a str>,
    pub body: &'a [u8],
}

/// Is `path` one of the autoconfig endpoints (any case: Outlook sends
/// `/AutoDiscover/AutoDiscover.xml` and other spellings)?
pub fn is_endpoint(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p == "/.well-known/autoconfig/mail/config-v1.1.xml"
        || p == "/mail/config-v1.1.xml"
        || p == "/autodiscover/autodiscover.xml"
        || p.starts_with("/autodiscover/autodiscover.json")
        || p == "/autoconfig/apple.mobileconfig"
}

/// The document for `req` (an [`is_endpoint`] path).
pub fn respond(offer: &Offer, req: &Request<'_>) -> Answer {
    let p = req.path.to_ascii_lowercase();
    if p.ends_with("/config-v1.1.xml") {
        return thunderbird(offer, req);
    }
    if p == "/autodiscover/autodiscover.xml" {
        return outlook_pox(offer, req);
    }
    if p.starts_with("/autodiscover/autodiscover.json") {
        return outlook_json(offer, req);
    }
    apple(offer, req)
}

/// Thunderbird (and K-9/Thunderbird for Android, FairEmail, Evolution…):
/// `?emailaddress=` or, as Thunderbird on Android asks, nothing: then the
/// placeholders, for the domain of the `autoconfig.<domain>` host name (or
/// the only one configured).
fn thunderbird(offer: &Offer, req: &Request<'_>) -> Answer {
    let address = req.query.get("emailaddress").map(String::as_str).filter(|a| !a.trim().is_empty());
    let domain = match address {
        Some(a) => offer.domain_of(a),
        None => {
            let by_host = req.host.and_then(|h| {
                let h = h.to_ascii_lowercase();
                h.strip_prefix("autoconfig.").and_then(|d| offer.serves(d))
            });
            by_host.or_else(|| (offer.domains.len() == 1).then(|| offer.domains[0].as_str()))
        }
    };
    let Some(domain) = domain else { return not_found() };
    let user = offer.username(address);
    let name = offer.display_name.clone().unwrap_or_else(|| format!("PEC {domain}"));
    let mut x = Xml::new();
    x.open("clientConfig", &[("version", "1.1")]);
    x.open("emailProvider", &[("id", domain)]);
    for d in &offer.domains {
        x.leaf("domain", &[], d);
    }
    x.leaf("displayName", &[], &name).leaf("displayShortName", &[], &name);
    let server = |x: &mut Xml, tag: &'static str, kind: &str, s: &Service| {
        x.open(tag, &[("type", kind)]);
        x.leaf("hostname", &[], &offer.host)
            .leaf("port", &[], &s.port.to_string())
            .leaf("socketType", &[], if s.implicit_tls { "SSL" } else { "STARTTLS" })
            .leaf("authentication", &[], "password-cleartext")
            .leaf("username", &[], &user);
        x.close();
    };
    if let Some(s) = &offer.imap {
        server(&mut x, "incomingServer", "imap", s);
    }
    if let Some(s) = &offer.smtp {
        server(&mut x, "outgoingServer", "smtp", s);
    }
    answer(200, "application/xml; charset=utf-8", x.finish())
}

/// The `<EMailAddress>` of an Autodiscover POX request.
fn pox_address(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut inside = false;
    loop {
        match r.read_event().ok()? {
            quick_xml::events::Event::Start(e) => inside = e.local_name().as_ref() == "EMailAddress",
            quick_xml::events::Event::Text(t) if inside => {
                return Some(t.xml10_content().trim().to_string());
            }
            quick_xml::events::Event::End(_) => inside = false,
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// Outlook's POX Autodiscover: IMAP and SMTP with `<SSL>on</SSL>` for the
/// implicit-TLS ports and no `<Encryption>` element (with
/// `<Encryption>TLS</Encryption>` Outlook tried STARTTLS on 993/465).
fn outlook_pox(offer: &Offer, req: &Request<'_>) -> Answer {
    if !req.method.eq_ignore_ascii_case("POST") && !req.method.eq_ignore_ascii_case("GET") {
        return answer(405, "text/plain; charset=utf-8", "POST the Autodiscover request\n".into());
    }
    let address = pox_address(req.body).or_else(|| req.query.get("emailaddress").cloned());
    let Some(address) = address.filter(|a| offer.domain_of(a).is_some()) else { return not_found() };
    let user = offer.username(Some(&address));
    let mut x = Xml::new();
    x.open("Autodiscover", &[("xmlns", "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006")]);
    x.open("Response", &[("xmlns", "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a")]);
    x.open("Account", &[]);
    x.leaf("AccountType", &[], "email").leaf("Action", &[], "settings");
    let proto = |x: &mut Xml, kind: &str, s: &Service| {
        x.open("Protocol", &[]);
        x.leaf("Type", &[], kind)
            .leaf("Server", &[], &offer.host)
            .leaf("Port", &[], &s.port.to_string())
            .leaf("DomainRequired", &[], "off")
            .leaf("LoginName", &[], &user)
            .leaf("SPA", &[], "off")
            .leaf("SSL", &[], if s.implicit_tls { "on" } else { "off" });
        if !s.implicit_tls {
            // STARTTLS: the only case that says an encryption method.
            x.leaf("Encryption", &[], "TLS");
        }
        x.leaf("AuthRequired", &[], "on");
        if kind == "SMTP" {
            x.leaf("UsePOPAuth", &[], "off").leaf("SMTPLast", &[], "off");
        }
        x.close();
    };
    if let Some(s) = &offer.imap {
        proto(&mut x, "IMAP", s);
    }
    if let Some(s) = &offer.smtp {
        proto(&mut x, "SMTP", s);
    }
    answer(200, "application/xml; charset=utf-8", x.finish())
}

/// Outlook's JSON Autodiscover (`/autodiscover/autodiscover.json/v1.0/
/// ADDRESS?Protocol=AutodiscoverV1`, any case): where the POX document is.
fn outlook_json(offer: &Offer, req: &Request<'_>) -> Answer {
    let rest = &req.path["/autodiscover/autodiscover.json".len()..];
    let address = rest.trim_start_matches('/').split_once('/').map(|(_, a)| a).unwrap_or("");
    let address = crate::http::percent_decode(address);
    let protocol = req.query.iter().find(|(k, _)| k.eq_ignore_ascii_case("protocol")).map(|(_, v)| v.as_str());
    if offer.domain_of(&address).is_none() {
        return not_found();
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case("autodiscoverv1") => {
            let url = format!("{}/autodiscover/autodiscover.xml", offer.https_base());
            let body = serde_json::json!({ "Protocol": "AutodiscoverV1", "Url": url }).to_string();
            answer(200, "application/json", body)
        }
        other => {
            let body = serde_json::json!({
                "ErrorCode": "InvalidProtocol",
                "ErrorMessage": format!("The given protocol value '{}' is invalid. Supported values are 'AutodiscoverV1'", other.unwrap_or("")),
            });
            answer(400, "application/json", body.to_string())
        }
    }
}

/// A UUID (version 4 layout) derived from `seed`, so the same address gets
/// the same profile identifiers (iOS replaces a profile with the same
/// identifier instead of adding a second account).
fn uuid_from(seed: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode_upper(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// An Apple configuration profile with one mail account
/// (`com.apple.mail.managed`), for `?emailaddress=` (without one, the
/// device asks for the address and the user name).
fn apple(offer: &Offer, req: &Request<'_>) -> Answer {
    let address = req.query.get("emailaddress").map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
    let domain = match &address {
        Some(a) => offer.domain_of(a).map(str::to_string),
        None => (offer.domains.len() == 1).then(|| offer.domains[0].clone()),
    };
    let (Some(domain), Some(imap), Some(smtp)) = (domain, offer.imap, offer.smtp) else { return not_found() };
    let name = offer.display_name.clone().unwrap_or_else(|| format!("PEC {domain}"));
    let seed = address.clone().unwrap_or_else(|| domain.clone());
    let reversed: Vec<&str> = domain.split('.').rev().collect();
    let ident = format!("{}.pecgate", reversed.join("."));
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let key = |k: &str, v: &str| format!("\t\t\t<key>{k}</key>\n\t\t\t<string>{}</string>\n", esc(v));
    let int = |k: &str, v: u16| format!("\t\t\t<key>{k}</key>\n\t\t\t<integer>{v}</integer>\n");
    let flag = |k: &str, v: bool| format!("\t\t\t<key>{k}</key>\n\t\t\t<{v}/>\n");
    let mut mail = String::new();
    mail += &key("EmailAccountDescription", &name);
    mail += &key("EmailAccountName", &name);
    mail += &key("EmailAccountType", "EmailTypeIMAP");
    if let Some(a) = &address {
        mail += &key("EmailAddress", a);
        mail += &key("IncomingMailServerUsername", &offer.username(Some(a)));
        mail += &key("OutgoingMailServerUsername", &offer.username(Some(a)));
    }
    mail += &key("IncomingMailServerAuthentication", "EmailAuthPassword");
    mail += &key("IncomingMailServerHostName", &offer.host);
    mail += &int("IncomingMailServerPortNumber", imap.port);
    mail += &flag("IncomingMailServerUseSSL", true);
    mail += &key("OutgoingMailServerAuthentication", "EmailAuthPassword");
    mail += &key("OutgoingMailServerHostName", &offer.host);
    mail += &int("OutgoingMailServerPortNumber", smtp.port);
    mail += &flag("OutgoingMailServerUseSSL", true);
    mail += &flag("OutgoingPasswordSameAsIncomingPassword", true);
    mail += &key("PayloadDescription", &format!("The PEC mailboxes of {domain} through pecgate"));
    mail += &key("PayloadDisplayName", &name);
    mail += &key("PayloadIdentifier", &format!("{ident}.mail.{}", uuid_from(&seed)));
    mail += &key("PayloadType", "com.apple.mail.managed");
    mail += &key("PayloadUUID", &uuid_from(&format!("mail {seed}")));
    mail += &int("PayloadVersion", 1);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\t<key>PayloadContent</key>\n\t<array>\n\t\t<dict>\n{mail}\t\t</dict>\n\t</array>\n\
         \t<key>PayloadDisplayName</key>\n\t<string>{dn}</string>\n\
         \t<key>PayloadIdentifier</key>\n\t<string>{ident}.{u}</string>\n\
         \t<key>PayloadRemovalDisallowed</key>\n\t<false/>\n\
         \t<key>PayloadType</key>\n\t<string>Configuration</string>\n\
         \t<key>PayloadUUID</key>\n\t<string>{pu}</string>\n\
         \t<key>PayloadVersion</key>\n\t<integer>1</integer>\n</dict>\n</plist>\n",
        dn = esc(&name),
        u = uuid_from(&seed),
        pu = uuid_from(&format!("profile {seed}")),
    );
    let mut a = answer(200, "application/x-apple-aspen-config", body);
    a.headers.push(("content-disposition", format!("attachment; filename=\"{domain}.mobileconfig\"")));
    a
}

/// The DNS records to add for each domain (`pecgate autoconfig dns`).
pub fn dns_records(offer: &Offer) -> String {
    let h = format!("{}.", offer.host.trim_end_matches('.'));
    let mut out = String::new();
    for d in &offer.domains {
        out += &format!("; {d}: clients find pecgate at {h}\n");
        let srv = |name: &str, s: Option<Service>, implicit: bool| match s {
            Some(s) if s.implicit_tls == implicit => format!("_{name}._tcp.{d}. 3600 IN SRV 0 1 {} {h}\n", s.port),
            // RFC 6186: target "." means "not offered here".
            _ => format!("_{name}._tcp.{d}. 3600 IN SRV 0 0 0 .\n"),
        };
        out += &srv("imaps", offer.imap, true);
        out += &srv("imap", offer.imap, false);
        out += &srv("submissions", offer.smtp, true);
        out += &srv("submission", offer.smtp, false);
        out += &format!("autoconfig.{d}. 3600 IN CNAME {h}\n");
        out += &format!("autodiscover.{d}. 3600 IN CNAME {h}\n");
        out += &format!("_autodiscover._tcp.{d}. 3600 IN SRV 0 1 {} {h}\n", offer.https_port);
        out += "\n";
    }
    out += &format!(
        "; Thunderbird asks https://autoconfig.<domain>/mail/config-v1.1.xml and Outlook\n\
         ; https://autodiscover.<domain>/autodiscover/autodiscover.xml: the [http] listener\n\
         ; (tls = true) must answer there, on port {}, with a certificate that also names\n\
         ; autoconfig.<domain> and autodiscover.<domain> (or use the SRV record, which\n\
         ; Outlook follows to {h}).\n",
        offer.https_port
    );
    out
}

#[cfg(test)]
mod tests;
