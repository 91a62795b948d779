//! Routing rules: which office or person an arriving certified message goes
//! to, with which keywords and deadline. First matching rule of the mailbox
//! wins; the mailbox's `default_office` catches the rest.
//!
//! Pure: the configuration and the message bytes in, a decision (and, for
//! `pecgate rules test`, the reasons) out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use super::Routing;
use crate::config::Config;
use crate::pec;

/// What a rule tests, compiled.
#[derive(Debug, Clone)]
enum Cond {
    From(Regex),
    FromDomain(String),
    To(Regex),
    Subject(Regex),
    Body(Regex),
    AttachmentName(Regex),
    AttachmentType(Regex),
    Daticert(String, Regex),
}

impl Cond {
    fn name(&self) -> String {
        match self {
            Cond::From(_) => "from".into(),
            Cond::FromDomain(_) => "from_domain".into(),
            Cond::To(_) => "to".into(),
            Cond::Subject(_) => "subject".into(),
            Cond::Body(_) => "body".into(),
            Cond::AttachmentName(_) => "attachment_name".into(),
            Cond::AttachmentType(_) => "attachment_type".into(),
            Cond::Daticert(f, _) => format!("daticert.{f}"),
        }
    }

    fn pattern(&self) -> &str {
        match self {
            Cond::FromDomain(d) => d,
            Cond::From(r)
            | Cond::To(r)
            | Cond::Subject(r)
            | Cond::Body(r)
            | Cond::AttachmentName(r)
            | Cond::AttachmentType(r)
            | Cond::Daticert(_, r) => r.as_str(),
        }
    }

    /// Does it hold, and on which value (for the explanation)?
    fn test(&self, f: &Facts) -> (bool, String) {
        let any = |re: &Regex, vals: &[String]| -> (bool, String) {
            match vals.iter().find(|v| re.is_match(v)) {
                Some(v) => (true, v.clone()),
                None => (false, vals.join(", ")),
            }
        };
        let one = |re: &Regex, v: &Option<String>| match v {
            Some(v) => (re.is_match(v), v.clone()),
            None => (false, "(absent)".into()),
        };
        match self {
            Cond::From(re) => one(re, &f.from),
            Cond::FromDomain(d) => {
                let dom = f.from.as_deref().and_then(|a| a.rsplit_once('@')).map(|(_, d)| d.to_string());
                match dom {
                    Some(x) => (x.eq_ignore_ascii_case(d), x),
                    None => (false, "(no sender)".into()),
                }
            }
            Cond::To(re) => any(re, &f.to),
            Cond::Subject(re) => one(re, &f.subject),
            Cond::Body(re) => match &f.body {
                Some(b) => (re.is_match(b), format!("{} characters of text", b.chars().count())),
                None => (false, "(no text)".into()),
            },
            Cond::AttachmentName(re) => any(re, &f.attachment_names),
            Cond::AttachmentType(re) => any(re, &f.attachment_types),
            Cond::Daticert(field, re) => one(re, &f.daticert.get(field).cloned()),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    conds: Vec<Cond>,
    office: Option<String>,
    person: Option<String>,
    keywords: Vec<String>,
    due: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct MailboxRules {
    rules: Vec<Rule>,
    default_office: Option<String>,
    default_person: Option<String>,
    default_due: Option<Duration>,
    handle_anomalies: bool,
}

/// The offices and rules in force, replaced in place by a SIGHUP: every
/// holder (the mailbox tasks' archive step, every IMAP session, open or
/// new) sees the new ones from its next use.
#[derive(Debug, Clone, Default)]
pub struct LiveRules(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Rules>>>);

impl LiveRules {
    pub fn new(rules: Rules) -> LiveRules {
        LiveRules(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(rules))))
    }

    /// The rules in force now.
    pub fn current(&self) -> std::sync::Arc<Rules> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn replace(&self, rules: Rules) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(rules);
    }
}

/// Every mailbox's rules, compiled; and the offices with their members.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    by_mailbox: BTreeMap<String, MailboxRules>,
    /// office → members
    pub offices: BTreeMap<String, Vec<String>>,
}

/// The values of a message rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub kind: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub attachment_names: Vec<String>,
    pub attachment_types: Vec<String>,
    pub daticert: BTreeMap<String, String>,
}

impl Facts {
    /// Read them from a message as archived (an envelope: the original
    /// inside it is what rules look at).
    pub fn of(raw: &[u8]) -> Facts {
        let c = pec::classify(raw);
        let mut f = Facts { kind: c.kind.as_str().to_string(), ..Facts::default() };
        let unwrapped = pec::envelope::unwrap_envelope(raw).ok();
        let original = unwrapped.as_ref().and_then(|u| u.original.as_deref());
        let inner = original.and_then(|o| crate::pec::parse_full(o));
        let outer = crate::pec::parse_full(raw);
        // The message whose sender, subject and text count: the original
        // for an envelope, the message itself otherwise.
        let msg = inner.as_ref().or(outer.as_ref());
        if let Some(d) = &c.daticert {
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    f.daticert.insert(k.to_string(), v);
                }
            };
            put("tipo", Some(d.tipo.clone()));
            put("mittente", d.mittente.clone());
            put("destinatari", Some(d.destinatari.iter().map(|x| x.address.clone()).collect::<Vec<_>>().join(", ")));
            put("risposte", d.risposte.clone());
            put("oggetto", d.oggetto.clone());
            put("gestore-emittente", d.gestore_emittente.clone());
            put("identificativo", d.identificativo.clone());
            put("msgid", d.msgid.clone());
            put("data", d.data.map(|t| t.to_rfc3339()));
            f.to = d.destinatari.iter().map(|x| x.address.to_ascii_lowercase()).collect();
            f.from = d.mittente.as_ref().map(|m| m.trim().to_ascii_lowercase());
            f.subject = d.oggetto.clone();
        }
        if let Some(m) = msg {
            let addr = |l: Option<&mail_parser::Address<'_>>| -> Vec<String> {
                l.map(|l| l.iter().filter_map(|a| a.address()).map(|a| a.to_ascii_lowercase()).collect())
                    .unwrap_or_default()
            };
            if f.from.is_none() {
                f.from = addr(m.from()).into_iter().next();
            }
            if f.to.is_empty() {
                f.to = addr(m.to()).into_iter().chain(addr(m.cc())).collect();
            }
            if inner.is_some() || f.subject.is_none() {
                if let Some(s) = m.subject() {
                    f.subject = Some(s.to_string());
                }
            }
            f.body = m.body_text(0).map(|t| t.into_owned());
        }
        if f.subject.is_none() {
            f.subject = c.subject.clone();
        }
        if let Some(u) = &unwrapped {
            for a in &u.attachments {
                if let Some(n) = &a.name {
                    f.attachment_names.push(n.clone());
                }
                f.attachment_types.push(a.content_type.clone());
            }
        }
        f
    }
}

/// The outcome of routing one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub routing: Routing,
    pub keywords: Vec<String>,
}

/// One rule's verdict, for `pecgate rules test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: String,
    pub matched: bool,
    /// (condition, pattern, held, the value tested)
    pub conditions: Vec<(String, String, bool, String)>,
}

impl Rules {
    /// Compile the rules of a validated configuration (anything invalid is
    /// left out: `Config::validate` reports it).
    pub fn compile(cfg: &Config) -> Rules {
        let offices: BTreeMap<String, Vec<String>> =
            cfg.offices.iter().map(|o| (o.name.clone(), o.members.clone())).collect();
        let split = |t: &Option<String>| match t {
            Some(t) if offices.contains_key(t) => (Some(t.clone()), None),
            Some(t) => (None, Some(t.clone())),
            None => (None, None),
        };
        let mut by_mailbox: BTreeMap<String, MailboxRules> = BTreeMap::new();
        for m in &cfg.mailboxes {
            let (o, p) = split(&m.default_office);
            by_mailbox.insert(
                m.alias.clone(),
                MailboxRules {
                    rules: Vec::new(),
                    default_office: o,
                    default_person: p,
                    default_due: m.default_due,
                    handle_anomalies: m.handle_anomalies,
                },
            );
        }
        for r in &cfg.rules {
            let mc = &r.matches;
            let re = |s: &Option<String>| s.as_deref().and_then(|s| Regex::new(s).ok());
            let mut conds = Vec::new();
            conds.extend(re(&mc.from).map(Cond::From));
            conds.extend(mc.from_domain.clone().map(Cond::FromDomain));
            conds.extend(re(&mc.to).map(Cond::To));
            conds.extend(re(&mc.subject).map(Cond::Subject));
            conds.extend(re(&mc.body).map(Cond::Body));
            conds.extend(re(&mc.attachment_name).map(Cond::AttachmentName));
            conds.extend(re(&mc.attachment_type).map(Cond::AttachmentType));
            for (f, r) in &mc.daticert {
                if let Ok(r) = Regex::new(r) {
                    conds.push(Cond::Daticert(f.clone(), r));
                }
            }
            let (office, person) = split(&r.assign);
            if let Some(mb) = by_mailbox.get_mut(&r.mailbox) {
                mb.rules.push(Rule {
                    name: r.name.clone(),
                    conds,
                    office,
                    person,
                    keywords: r.keywords.clone(),
                    due: r.due,
                });
            }
        }
        Rules { by_mailbox, offices }
    }

    /// Is a message of `kind` arriving in `mailbox`'s INBOX tracked?
    /// Certified messages are; anomaly envelopes when the mailbox says so.
    pub fn tracks(&self, mailbox: &str, kind: &pec::PecKind) -> bool {
        match kind {
            pec::PecKind::PostaCertificata => true,
            pec::PecKind::Anomalia => self.by_mailbox.get(mailbox).is_some_and(|m| m.handle_anomalies),
            _ => false,
        }
    }

    /// Offices `user` belongs to.
    pub fn offices_of(&self, user: &str) -> Vec<String> {
        self.offices.iter().filter(|(_, members)| members.iter().any(|m| m == user)).map(|(o, _)| o.clone()).collect()
    }

    /// Route a message arriving in `mailbox` at `now`.
    pub fn route(&self, mailbox: &str, facts: &Facts, now: DateTime<Utc>) -> Decision {
        let Some(mb) = self.by_mailbox.get(mailbox) else {
            return Decision { routing: Routing::default(), keywords: Vec::new() };
        };
        let due = |d: Option<Duration>| {
            d.or(mb.default_due)
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .and_then(|d| now.checked_add_signed(d))
        };
        for r in &mb.rules {
            if r.conds.iter().all(|c| c.test(facts).0) {
                let (office, person) = match (&r.office, &r.person) {
                    (None, None) => (mb.default_office.clone(), mb.default_person.clone()),
                    (o, p) => (o.clone(), p.clone()),
                };
                return Decision {
                    routing: Routing { rule: Some(r.name.clone()), office, person, due: due(r.due) },
                    keywords: r.keywords.clone(),
                };
            }
        }
        Decision {
            routing: Routing {
                rule: None,
                office: mb.default_office.clone(),
                person: mb.default_person.clone(),
                due: due(None),
            },
            keywords: Vec::new(),
        }
    }

    /// Every rule of `mailbox` with each condition's result, in order.
    pub fn explain(&self, mailbox: &str, facts: &Facts) -> Vec<Verdict> {
        let Some(mb) = self.by_mailbox.get(mailbox) else { return Vec::new() };
        mb.rules
            .iter()
            .map(|r| {
                let conditions: Vec<_> = r
                    .conds
                    .iter()
                    .map(|c| {
                        let (ok, v) = c.test(facts);
                        (c.name(), c.pattern().to_string(), ok, v)
                    })
                    .collect();
                Verdict { rule: r.name.clone(), matched: conditions.iter().all(|c| c.2), conditions }
            })
            .collect()
    }

    pub fn mailboxes(&self) -> impl Iterator<Item = &str> {
        self.by_mailbox.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            r#"
[store]
data_dir = "/tmp/x"
[[mailbox]]
alias = "protocollo"
address = "protocollo@pec.comune.example.it"
username = "u"
password = "p"
imap = {{ host = "127.0.0.1", port = 993 }}
default_office = "protocollo-generale"
default_due = "60d"
[[user]]
name = "mario.rossi"
password_hash = "x"
[[user]]
name = "anna.bianchi"
password_hash = "x"
[[office]]
name = "tributi"
members = ["mario.rossi", "anna.bianchi"]
[[office]]
name = "protocollo-generale"
members = ["anna.bianchi"]
{extra}
"#
        );
        crate::config::from_toml_str(&text, std::path::Path::new("t.toml")).unwrap()
    }

    const RULE: &str = r#"
[[rule]]
mailbox = "protocollo"
name = "multe"
match = { from_domain = "pec.polizia.example.it", subject = "(?i)verbale|sanzione" }
assign = "tributi"
keywords = ["$Multe"]
due = "30d"
"#;

    fn facts(from: &str, subject: &str) -> Facts {
        Facts {
            kind: "posta-certificata".into(),
            from: Some(from.into()),
            subject: Some(subject.into()),
            ..Facts::default()
        }
    }

    #[test]
    fn first_match_and_default() {
        let c = cfg(RULE);
        let p: Vec<String> = c.validate().iter().map(|p| p.to_string()).collect();
        assert!(p.iter().all(|p| !p.starts_with("rule") && !p.starts_with("office")), "{p:?}");
        let rules = Rules::compile(&c);
        let now: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let d = rules.route("protocollo", &facts("vigili@pec.polizia.example.it", "Verbale n. 12"), now);
        assert_eq!(d.routing.rule.as_deref(), Some("multe"));
        assert_eq!(d.routing.office.as_deref(), Some("tributi"));
        assert_eq!(d.routing.due, Some(now + chrono::Duration::days(30)));
        assert_eq!(d.keywords, vec!["$Multe".to_string()]);
        let d = rules.route("protocollo", &facts("vigili@pec.polizia.example.it", "Auguri"), now);
        assert_eq!(d.routing.rule, None);
        assert_eq!(d.routing.office.as_deref(), Some("protocollo-generale"));
        assert_eq!(d.routing.due, Some(now + chrono::Duration::days(60)));
        let v = rules.explain("protocollo", &facts("x@other.it", "Verbale"));
        assert!(!v[0].matched);
        assert!(!v[0].conditions[0].2);
        assert_eq!(rules.offices_of("anna.bianchi"), vec!["protocollo-generale".to_string(), "tributi".to_string()]);
    }

    #[test]
    fn anomaly_envelopes_only_where_configured() {
        let mut c = cfg("");
        let rules = Rules::compile(&c);
        assert!(rules.tracks("protocollo", &pec::PecKind::PostaCertificata));
        assert!(!rules.tracks("protocollo", &pec::PecKind::Anomalia));
        assert!(!rules.tracks("protocollo", &pec::PecKind::Accettazione));
        c.mailboxes[0].handle_anomalies = true;
        assert!(Rules::compile(&c).tracks("protocollo", &pec::PecKind::Anomalia));
    }

    #[test]
    fn facts_of_a_sample_envelope() {
        let raw =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pec/01-posta-certificata.eml")).unwrap();
        let f = Facts::of(&raw);
        assert_eq!(f.kind, "posta-certificata");
        assert_eq!(f.from.as_deref(), Some("protocollo@pec.comune.example.it"));
        assert_eq!(f.subject.as_deref(), Some("Sollecito di pagamento n. 42/2026 - fattura idrica"));
        assert!(f.body.as_deref().is_some_and(|b| b.contains("risulta non pagata")), "{:?}", f.body);
        assert_eq!(f.attachment_names, vec!["fattura-42.pdf".to_string()]);
        assert!(f.to.contains(&"ufficio.legale@pec.ditta.example.it".to_string()));
    }

    #[test]
    fn errors_name_their_key() {
        let bad = r#"
[[rule]]
mailbox = "nope"
name = "r"
match = { subject = "(unclosed", daticert = { colore = "x" } }
assign = "ufficio-fantasma"
[[office]]
name = "a/b"
members = ["nessuno"]
"#;
        let p: Vec<String> = cfg(bad).validate().iter().map(|p| p.to_string()).collect();
        for key in [
            "rule[0].mailbox:",
            "rule[0].match.subject: invalid regex",
            "rule[0].match.daticert.colore: unknown daticert field",
            "rule[0].assign: no office or user \"ufficio-fantasma\"",
            "office[2].name:",
            "office[2].members[0]: no user \"nessuno\"",
        ] {
            assert!(p.iter().any(|l| l.starts_with(key)), "{key} missing in {p:#?}");
        }
        assert!(p.iter().all(|l| !l.contains('\n')));
    }
}
