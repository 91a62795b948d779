//! Per-user IMAP subscriptions (RFC 3501 §6.3.6–6.3.9, RFC 5258 §3): what
//! each user subscribed or unsubscribed, by folder name as IMAP shows it
//! (`protocollo/Contratti`, `INBOX`). Only explicit choices are kept here;
//! what a name nobody chose for counts as (the gateway's own folders are
//! subscribed until unsubscribed) is the IMAP layer's business
//! (`imap::subscriptions`).
//!
//! A name stays subscribed when its folder is deleted (RFC 3501 §6.3.6: a
//! server must not remove it by itself). A category's RENAME moves the
//! subscriptions of it and of every name under it, every user's: the
//! folder is shared, and whoever subscribed it keeps seeing it.
//!
//! Table `subs` of the index: user `\0` name → `1` (subscribed) or `0`
//! (unsubscribed). Derived from the journal's `subscription-changed` and
//! `subscriptions-renamed` records, like every other table.

use redb::{ReadableTable, Table, TableDefinition};

use super::index::{key, Error};

pub(super) const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("subs");

type Tbl<'t> = Table<'t, &'static [u8], &'static [u8]>;

const ON: &[u8] = b"1";
const OFF: &[u8] = b"0";

/// `user` subscribed (`on`) or unsubscribed `name`.
pub(super) fn set(t: &mut Tbl<'_>, user: &str, name: &str, on: bool) -> Result<(), Error> {
    t.insert(key(&[user.as_bytes(), name.as_bytes()]).as_slice(), if on { ON } else { OFF })?;
    Ok(())
}

/// `from` became `to`: every user's choice about `from`, and about each
/// name under it (`from/…`), moves to the new name; a choice already made
/// about a new name is replaced.
pub(super) fn rename(t: &mut Tbl<'_>, from: &str, to: &str) -> Result<(), Error> {
    let mut moves = Vec::new();
    for kv in t.iter()? {
        let (k, v) = kv?;
        let k = k.value();
        let Some(at) = k.iter().position(|b| *b == 0) else { continue };
        let (user, name) = (&k[..at], &k[at + 1..]);
        if let Some(new) = moved(name, from.as_bytes(), to.as_bytes()) {
            moves.push((k.to_vec(), key(&[user, &new]), v.value().to_vec()));
        }
    }
    // Every old name first, then the new ones: `A` → `A/B` moves `A/c`
    // to `A/B/c`, not twice.
    for (old, _, _) in &moves {
        t.remove(old.as_slice())?;
    }
    for (_, new, v) in &moves {
        t.insert(new.as_slice(), v.as_slice())?;
    }
    Ok(())
}

/// `name` under its new name after `from` became `to`, if it moves.
fn moved(name: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let rest = name.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with(b"/")).then(|| [to, rest].concat())
}

/// `user`'s choices: (name, subscribed), by name.
pub(super) fn of(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    user: &str,
) -> Result<Vec<(String, bool)>, Error> {
    let mut p = user.as_bytes().to_vec();
    p.push(0);
    let mut out = Vec::new();
    for kv in t.range(p.as_slice()..)? {
        let (k, v) = kv?;
        let Some(name) = k.value().strip_prefix(p.as_slice()) else { break };
        out.push((String::from_utf8_lossy(name).into_owned(), v.value() == ON));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_table(f: impl FnOnce(&mut Tbl<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            f(&mut t);
        }
        tx.commit().unwrap();
    }

    #[test]
    fn choices_are_per_user_and_the_last_one_counts() {
        with_table(|t| {
            set(t, "mario", "prot/A", true).unwrap();
            set(t, "mario", "prot/Receipts", false).unwrap();
            set(t, "mario2", "prot/B", true).unwrap();
            set(t, "mario", "prot/A", false).unwrap();
            set(t, "mario", "prot/A", true).unwrap();
            assert_eq!(of(t, "mario").unwrap(), vec![("prot/A".into(), true), ("prot/Receipts".into(), false)]);
            assert_eq!(of(t, "mario2").unwrap(), vec![("prot/B".into(), true)]);
            assert_eq!(of(t, "mari").unwrap(), vec![], "a user name that is a prefix of another");
        });
    }

    #[test]
    fn a_rename_moves_the_name_and_its_inferiors_for_everybody() {
        with_table(|t| {
            set(t, "mario", "prot/A", true).unwrap();
            set(t, "mario", "prot/A/x", true).unwrap();
            set(t, "mario", "prot/A/gone/y", false).unwrap();
            set(t, "mario", "prot/AB", true).unwrap();
            set(t, "luigi", "prot/A/x", true).unwrap();
            set(t, "luigi", "prot/B", false).unwrap();
            rename(t, "prot/A", "prot/B").unwrap();
            assert_eq!(
                of(t, "mario").unwrap(),
                vec![
                    ("prot/AB".into(), true),
                    ("prot/B".into(), true),
                    ("prot/B/gone/y".into(), false),
                    ("prot/B/x".into(), true)
                ]
            );
            assert_eq!(of(t, "luigi").unwrap(), vec![("prot/B".into(), false), ("prot/B/x".into(), true)]);
            // Into its own inferior: each name moves once.
            rename(t, "prot/B", "prot/B/C").unwrap();
            assert_eq!(
                of(t, "mario").unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
                vec!["prot/AB", "prot/B/C", "prot/B/C/gone/y", "prot/B/C/x"]
            );
        });
    }
}
