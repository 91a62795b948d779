//! NOTIFY (RFC 5465), the part pecgate offers: the message events
//! (MessageNew, MessageExpunge, FlagChange) for the selected folder
//! (`SELECTED`, `SELECTED-DELAYED`: told as soon as they happen, as in
//! IDLE) and for other folders (`INBOXES`, `PERSONAL`, `SUBSCRIBED`,
//! `SUBTREE`, `MAILBOXES`: a `* STATUS` when what the events cover
//! changed), with `STATUS` the folders' state at once; `SUBSCRIBED` is
//! the folders the user subscribes now (`super::subscriptions`). The other
//! events (mailbox names, subscriptions, annotations, metadata) are
//! refused with `NO [BADEVENT]`: telling a session of another session's
//! CREATE, RENAME or SUBSCRIBE would need the store to announce folder
//! and subscription changes, which it does not (its notices are about
//! messages).
//!
//! Parsing and matching are pure; the session sends.

use imap_next::imap_types::status::StatusDataItem;

use super::respond::nz;
use super::view::{normalize, Counts, Folder, NOMODSEQ};

/// The message events asked for a group of folders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    pub new: bool,
    pub expunge: bool,
    pub flags: bool,
}

impl Events {
    fn any(&self) -> bool {
        self.new || self.expunge || self.flags
    }
}

/// Which folders a group is about (RFC 5465 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Selected { delayed: bool },
    Inboxes,
    Personal,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub which: Which,
    pub events: Events,
}

/// `NOTIFY SET [STATUS] groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    pub status: bool,
    pub groups: Vec<Group>,
}

/// The events offered, for `NO [BADEVENT (...)]`.
pub const OFFERED: [&str; 3] = ["MessageNew", "MessageExpunge", "FlagChange"];

/// Why a NOTIFY is refused: `BadEvent` is `NO [BADEVENT]`, `Bad` a BAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadEvent(String),
    Bad(&'static str),
}

/// Splits off the next token of a group (`extended::token`).
pub type Tokenizer = fn(&[u8]) -> Option<(&[u8], &[u8])>;

/// The words after `NOTIFY SET`; `tokens` splits a group (see
/// `extended::token`) and `mailbox` reads a mailbox name as IMAP writes it.
pub fn parse_set(
    mut rest: &[u8],
    token: Tokenizer,
    mailbox: &dyn Fn(&[u8]) -> Option<String>,
) -> Result<Notify, Refusal> {
    const SYNTAX: Refusal = Refusal::Bad("NOTIFY SET [STATUS] (filter (events)) ...");
    let mut n = Notify::default();
    if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(b"STATUS") && rest.get(6) == Some(&b' ') {
        n.status = true;
        rest = &rest[7..];
    }
    while !rest.is_empty() {
        let (group, r) = token(rest).ok_or(SYNTAX)?;
        rest = r.strip_prefix(b" ").unwrap_or(r);
        let inner = group.strip_prefix(b"(").and_then(|g| g.strip_suffix(b")")).ok_or(SYNTAX)?;
        let (filter, mut g) = token(inner).ok_or(SYNTAX)?;
        g = g.strip_prefix(b" ").ok_or(SYNTAX)?;
        let mut names = || -> Result<Vec<String>, Refusal> {
            let (m, r) = token(g).ok_or(SYNTAX)?;
            g = r.strip_prefix(b" ").ok_or(SYNTAX)?;
            let list: Vec<&[u8]> = match m.strip_prefix(b"(").and_then(|m| m.strip_suffix(b")")) {
                Some(mut inner) => {
                    let mut out = Vec::new();
                    while !inner.is_empty() {
                        let (x, r) = token(inner).ok_or(SYNTAX)?;
                        inner = r.strip_prefix(b" ").unwrap_or(r);
                        out.push(x);
                    }
                    out
                }
                None => vec![m],
            };
            list.into_iter().map(|m| mailbox(m).map(|s| normalize(&s)).ok_or(SYNTAX)).collect()
        };
        let which = match filter.to_ascii_uppercase().as_slice() {
            b"SELECTED" => Which::Selected { delayed: false },
            b"SELECTED-DELAYED" => Which::Selected { delayed: true },
            b"INBOXES" => Which::Inboxes,
            b"PERSONAL" => Which::Personal,
            b"SUBSCRIBED" => Which::Subscribed,
            b"SUBTREE" => Which::Subtree(names()?),
            b"MAILBOXES" => Which::Mailboxes(names()?),
            _ => {
                return Err(Refusal::Bad(
                    "NOTIFY filters: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES",
                ))
            }
        };
        let events = if g.eq_ignore_ascii_case(b"NONE") {
            Events::default()
        } else {
            let list = g.strip_prefix(b"(").and_then(|g| g.strip_suffix(b")")).ok_or(SYNTAX)?;
            let mut e = Events::default();
            for w in list.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
                match w.to_ascii_lowercase().as_slice() {
                    b"messagenew" => e.new = true,
                    b"messageexpunge" => e.expunge = true,
                    b"flagchange" => e.flags = true,
                    w if w.starts_with(b"(") => {
                        return Err(Refusal::Bad("MessageNew with FETCH attributes is not offered"))
                    }
                    _ => return Err(Refusal::BadEvent(String::from_utf8_lossy(w).into_owned())),
                }
            }
            if !e.any() {
                return Err(SYNTAX);
            }
            e
        };
        n.groups.push(Group { which, events });
    }
    if n.groups.is_empty() {
        return Err(SYNTAX);
    }
    Ok(n)
}

impl Notify {
    /// The events asked for the selected folder, and whether delayed
    /// (SELECTED-DELAYED: no EXPUNGE until a command allows it).
    pub fn selected(&self) -> Option<(Events, bool)> {
        self.groups.iter().find_map(|g| match g.which {
            Which::Selected { delayed } if g.events.any() => Some((g.events, delayed)),
            _ => None,
        })
    }

    /// Does a group name the subscribed folders (the caller then reads
    /// the subscriptions for [`Notify::other`])?
    pub fn uses_subscribed(&self) -> bool {
        self.groups.iter().any(|g| g.which == Which::Subscribed)
    }

    /// The events asked for `f` as a folder other than the selected one
    /// (the first group that names it wins, RFC 5465 §6), if any;
    /// `subscribed`: is `f` subscribed.
    pub fn other(&self, f: &Folder, subscribed: bool) -> Option<Events> {
        let is_inbox = f.name.eq_ignore_ascii_case("INBOX") || f.name.ends_with("/INBOX");
        self.groups
            .iter()
            .find(|g| match &g.which {
                Which::Selected { .. } => false,
                Which::Inboxes => is_inbox,
                Which::Personal => true,
                Which::Subscribed => subscribed,
                Which::Subtree(names) => names
                    .iter()
                    .any(|n| f.name == *n || f.name.strip_prefix(n.as_str()).is_some_and(|r| r.starts_with('/'))),
                Which::Mailboxes(names) => names.contains(&f.name),
            })
            .map(|g| g.events)
            .filter(Events::any)
    }
}

/// What a `* STATUS` for `events` says (as Dovecot: MESSAGES for new and
/// expunged messages, UIDNEXT for new ones, UIDVALIDITY, and
/// HIGHESTMODSEQ for flag changes in a folder that keeps MODSEQs).
pub fn items(events: Events, c: &Counts) -> Vec<StatusDataItem> {
    let mut out = Vec::new();
    if events.new || events.expunge {
        out.push(StatusDataItem::Messages(c.exists));
    }
    if events.new {
        out.push(StatusDataItem::UidNext(nz(c.uidnext)));
    }
    if events.new || events.flags {
        out.push(StatusDataItem::UidValidity(nz(c.uidvalidity)));
    }
    if events.flags && c.highest_modseq != NOMODSEQ {
        out.push(StatusDataItem::HighestModSeq(c.highest_modseq));
    }
    out
}

/// Has what `events` cover changed from `was` to `now`?
pub fn changed(events: Events, was: &Counts, now: &Counts) -> bool {
    was.uidvalidity != now.uidvalidity
        || (events.new || events.expunge) && was.exists != now.exists
        || events.new && was.uidnext != now.uidnext
        || events.flags && (was.highest_modseq != now.highest_modseq || was.unseen != now.unseen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &[u8]) -> Option<(&[u8], &[u8])> {
        crate::imap::extended::token(s)
    }

    fn parse(s: &str) -> Result<Notify, Refusal> {
        parse_set(s.as_bytes(), tok, &|m| Some(String::from_utf8_lossy(m).trim_matches('"').to_string()))
    }

    #[test]
    fn rfc_5465_examples() {
        let n = parse("(selected MessageExpunge) (subtree Lists MessageNew)");
        assert_eq!(n, Err(Refusal::Bad("NOTIFY SET [STATUS] (filter (events)) ...")), "events are parenthesised");
        let n = parse("STATUS (selected (MessageNew MessageExpunge FlagChange)) (subtree (Lists Other) (MessageNew))")
            .expect("set");
        assert!(n.status);
        assert_eq!(n.selected(), Some((Events { new: true, expunge: true, flags: true }, false)));
        let f = |name: &str| Folder { name: name.into(), ..Folder::default() };
        assert_eq!(n.other(&f("Lists/a"), false), Some(Events { new: true, ..Default::default() }));
        assert_eq!(n.other(&f("Other"), false), Some(Events { new: true, ..Default::default() }));
        assert_eq!(n.other(&f("Listsx"), false), None);
        let n = parse("(inboxes (MessageNew)) (mailboxes \"prot/A\" (FlagChange))").expect("set");
        assert!(n.other(&f("prot/INBOX"), false).is_some_and(|e| e.new && !e.flags));
        assert!(n.other(&f("prot/A"), false).is_some_and(|e| e.flags));
        assert_eq!(n.selected(), None);
        assert_eq!(parse("(personal (MailboxName))"), Err(Refusal::BadEvent("MailboxName".into())));
        assert!(matches!(parse("(selected (MessageNew (UID FLAGS)))"), Err(Refusal::Bad(_))));
        assert!(matches!(parse("(nosuch (MessageNew))"), Err(Refusal::Bad(_))));
        assert!(matches!(parse("STATUS"), Err(Refusal::Bad(_))));
        assert_eq!(parse("(personal NONE)").map(|n| n.other(&f("x"), true)), Ok(None));
        // SUBSCRIBED: only what the user subscribes.
        let n = parse("(subscribed (MessageNew))").expect("set");
        assert!(n.uses_subscribed());
        assert!(n.other(&f("prot/A"), true).is_some() && n.other(&f("prot/A"), false).is_none());
        assert!(!parse("(personal (MessageNew))").expect("set").uses_subscribed());
    }

    #[test]
    fn status_items_as_dovecot() {
        let c = Counts { uidvalidity: 7, uidnext: 3, exists: 1, unseen: 1, highest_modseq: 9 };
        let e = |new, expunge, flags| Events { new, expunge, flags };
        assert_eq!(items(e(false, true, false), &c), vec![StatusDataItem::Messages(1)]);
        assert_eq!(
            items(e(true, false, false), &c),
            vec![StatusDataItem::Messages(1), StatusDataItem::UidNext(nz(3)), StatusDataItem::UidValidity(nz(7))]
        );
        assert_eq!(
            items(e(false, false, true), &c),
            vec![StatusDataItem::UidValidity(nz(7)), StatusDataItem::HighestModSeq(9)]
        );
        let later = Counts { exists: 2, uidnext: 4, ..c.clone() };
        assert!(changed(e(true, false, false), &c, &later) && !changed(e(false, false, true), &c, &later));
    }
}
