//! CATENATE (RFC 4469): an APPEND whose message is put together from
//! bytes the client sends and parts of messages already in the archive,
//! named by IMAP URLs (RFC 5092) relative to this server:
//! `/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]`.
//!
//! A URL is followed only into a folder the user may read (the same
//! check as EXAMINE), the read is recorded as a FETCH of the body is, and
//! anything else — another server, a UIDVALIDITY that is not the folder's,
//! a message or section that is not there — is `NO [BADURL "url"]`.

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_next::imap_types::command::CommandBody;
use imap_next::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};

use super::command::{Authed, Conn};
use super::fetch;
use crate::auth::Right;

/// What a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub mailbox: String,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// `SECTION=` as written (`HEADER`, `1.MIME`, `TEXT`), if any.
    pub section: Option<String>,
    /// `PARTIAL=offset[.length]`.
    pub partial: Option<(u32, Option<u32>)>,
}

/// Read a URL of the form above (`None` for anything else: an absolute
/// `imap://` URL, URLAUTH, a missing UID).
pub fn parse(url: &str) -> Option<Url> {
    let path = url.strip_prefix('/')?;
    let lower = path.to_ascii_lowercase();
    let at = lower.find("/;uid=")?;
    let (mbox, rest) = (&path[..at], &path[at + "/;uid=".len()..]);
    let (mailbox, uidvalidity) = match mbox.to_ascii_lowercase().find(";uidvalidity=") {
        Some(i) => (&mbox[..i], Some(mbox[i + ";uidvalidity=".len()..].parse().ok()?)),
        None => (mbox, None),
    };
    let mut pieces = rest.split("/;");
    let uid: u32 = pieces.next()?.parse().ok()?;
    let (mut section, mut partial) = (None, None);
    for p in pieces {
        let (k, v) = p.split_once('=')?;
        match k.to_ascii_lowercase().as_str() {
            "section" if section.is_none() => section = Some(decode(v)?),
            "partial" if partial.is_none() => {
                let (o, l) = match v.split_once('.') {
                    Some((o, l)) => (o.parse().ok()?, Some(l.parse().ok()?)),
                    None => (v.parse().ok()?, None),
                };
                partial = Some((o, l));
            }
            _ => return None,
        }
    }
    (uid > 0)
        .then(|| Url { mailbox: decode(mailbox).unwrap_or_default(), uidvalidity, uid, section, partial })
        .filter(|u| !u.mailbox.is_empty())
}

/// `%xx` escapes undone (RFC 5092 §2: the mailbox name is modified UTF-7
/// as IMAP names it, then URL-escaped).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A section as FETCH BODY[section] reads it (imap-codec parses it).
fn section(s: &str) -> Option<Section<'static>> {
    let line = format!("x FETCH 1 BODY.PEEK[{s}]\r\n");
    match CommandCodec::default().decode_static(line.as_bytes()) {
        Ok((
            [],
            imap_next::imap_types::command::Command {
                body:
                    CommandBody::Fetch { macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(n), .. },
                ..
            },
        )) => match n.into_iter().next() {
            Some(MessageDataItemName::BodyExt { section, .. }) => section,
            _ => None,
        },
        _ => None,
    }
}

/// The bytes `url` names, read for `user` (the read is audited); `None`
/// when it names nothing this user may read.
pub async fn resolve(conn: &Conn, user: &Authed, url: &str) -> Option<Vec<u8>> {
    let u = parse(url)?;
    let view = &user.view;
    let folder = view.resolve(&u.mailbox).ok()?;
    if !view.may(&folder, Right::Read) {
        return None;
    }
    let (counts, (msgs, _)) = view.open(&folder).ok()?;
    if u.uidvalidity.is_some_and(|v| v != counts.uidvalidity) {
        return None;
    }
    let i = msgs.binary_search_by_key(&u.uid, |m| m.0).ok()?;
    let meta = &msgs[i].1;
    let sec = match &u.section {
        Some(s) => Some(section(s)?),
        None => None,
    };
    let audit_folder = if folder.handling.is_some() { folder.source() } else { folder.audit_name() };
    let a = user
        .audit(conn, "read")
        .mailbox(&folder.mailbox)
        .folder(audit_folder)
        .uids(vec![meta.source_uid.unwrap_or(u.uid)]);
    if !conn.audit_only(a).await {
        return None;
    }
    let store = conn.ctx.store.clone();
    let hash = meta.hash.hex();
    let raw = tokio::task::spawn_blocking(move || store.get_blob(&hash)).await.ok()?.ok()?;
    let bytes = fetch::section(&raw, sec.as_ref());
    Some(match u.partial {
        Some((o, l)) => {
            let len = l.and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MAX);
            fetch::partial(bytes, Some((o, len)))
        }
        None => bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse("/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=1.MIME").expect("url");
        assert_eq!(
            u,
            Url {
                mailbox: "Drafts".into(),
                uidvalidity: Some(385759045),
                uid: 20,
                section: Some("1.MIME".into()),
                partial: None
            }
        );
        let u = parse("/protocollo/imaptest/;uid=3/;partial=100000.1").expect("url");
        assert_eq!(
            (u.mailbox.as_str(), u.uid, u.section, u.partial),
            ("protocollo/imaptest", 3, None, Some((100000, Some(1))))
        );
        assert_eq!(parse("/a%20b/;UID=1").map(|u| u.mailbox), Some("a b".into()));
        for bad in
            ["imap://h/INBOX/;UID=1", "/INBOX", "/INBOX/;UID=0", "/INBOX/;UID=x", "/;UID=1", "/INBOX/;UID=1/;URLAUTH=x"]
        {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(section("HEADER").is_some() && section("1.MIME").is_some() && section("TEXT").is_some());
        assert!(section("NOSUCH").is_none());
    }
}
