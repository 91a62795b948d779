//! One LDAP conversation with the directory (ldap3 over rustls): connect
//! (LDAPS or StartTLS), bind as the service account, find a user's entry,
//! test group membership, bind as the user. Every operation has the
//! configured timeout; nothing here keeps a connection between logins.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope};

use super::DirError;

/// LDAP result codes that mean "these credentials are not accepted"
/// (RFC 4511: inappropriateAuthentication 48, invalidCredentials 49,
/// insufficientAccessRights 50, unwillingToPerform 53 — AD answers a
/// disabled or expired account with 49 and a reason in the message).
const REFUSED: [u32; 4] = [48, 49, 50, 53];

/// The OID an Active Directory domain controller lists in the root DSE's
/// `supportedCapabilities` (LDAP_CAP_ACTIVE_DIRECTORY_OID).
const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";
/// AD's LDAP_MATCHING_RULE_IN_CHAIN: membership through nested groups.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub starttls: bool,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

/// An open, driven connection.
pub struct Conn {
    ldap: Ldap,
    timeout: Duration,
    /// Whether the server is Active Directory (nested groups by
    /// LDAP_MATCHING_RULE_IN_CHAIN), asked once per connection when needed.
    ad: Option<bool>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> DirError {
    DirError::Unavailable(format!("{what}: {e}"))
}

impl Conn {
    pub async fn open(t: &Target) -> Result<Conn, DirError> {
        // Our own socket, with TCP_NODELAY: ldap3 writes a request in more
        // than one segment, and with Nagle a login could wait for the
        // server's delayed ACK.
        let (host, port) = crate::config::ldap_authority(&t.url)
            .ok_or_else(|| DirError::Unavailable(format!("{} has no host", t.url)))?;
        let tcp = tokio::time::timeout(t.timeout, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| DirError::Unavailable(format!("connecting to {}: timed out after {:?}", t.url, t.timeout)))?
            .map_err(|e| unavailable(&format!("connecting to {}", t.url), e))?;
        let _ = tcp.set_nodelay(true);
        let tcp = tcp.into_std().map_err(|e| unavailable("socket", e))?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(t.timeout)
            .set_starttls(t.starttls)
            .set_config(t.tls.clone())
            .set_std_stream(ldap3::StdStream::Tcp(tcp));
        let opened = tokio::time::timeout(t.timeout * 2, LdapConnAsync::with_settings(settings, &t.url))
            .await
            .map_err(|_| DirError::Unavailable(format!("connecting to {}: timed out after {:?}", t.url, t.timeout)))?;
        let (conn, ldap) = opened.map_err(|e| unavailable(&format!("connecting to {}", t.url), e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(Conn { ldap, timeout: t.timeout, ad: None })
    }

    async fn timed<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, LdapError>>,
    ) -> Result<T, DirError> {
        match tokio::time::timeout(self.timeout, op).await {
            Err(_) => Err(DirError::Unavailable(format!("{what}: no answer within {:?}", self.timeout))),
            Ok(Err(e)) => Err(unavailable(what, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Simple bind. `Ok(false)`: the server refused these credentials.
    /// Never called with an empty password (an unauthenticated bind, RFC
    /// 4513 5.1.2, which servers accept and which proves nothing).
    pub async fn bind(&mut self, dn: &str, password: &str) -> Result<bool, DirError> {
        if password.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.ldap.clone();
        let r = self.timed("bind", ldap.simple_bind(dn, password)).await?;
        match r.rc {
            0 => Ok(true),
            rc if REFUSED.contains(&rc) => {
                tracing::debug!(dn, rc, text = %r.text, "directory refused a bind");
                Ok(false)
            }
            rc => Err(DirError::Unavailable(format!("bind answered {rc} ({})", r.text))),
        }
    }

    /// The entries `filter` finds under `base`: each DN with the values of
    /// `attr` (no attributes at all without one).
    async fn entries(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attr: Option<&str>,
    ) -> Result<Vec<(String, Vec<String>)>, DirError> {
        let mut ldap = self.ldap.clone();
        let attrs = vec![attr.unwrap_or("1.1")];
        let r = self.timed("search", ldap.search(base, scope, filter, attrs)).await?;
        // noSuchObject (32): the base is not there (a group deleted).
        if r.1.rc == 32 {
            return Ok(Vec::new());
        }
        if r.1.rc != 0 {
            return Err(DirError::Unavailable(format!("search under {base:?} answered {} ({})", r.1.rc, r.1.text)));
        }
        Ok(r.0.into_iter().filter_map(|e| entry(e, attr.unwrap_or("1.1"))).collect())
    }

    /// The one entry `filter` finds under `base`, with its first value of
    /// `attr`: none, or several (an ambiguous login), is no user.
    pub async fn find(
        &mut self,
        base: &str,
        filter: &str,
        attr: Option<&str>,
    ) -> Result<Option<(String, Option<String>)>, DirError> {
        let mut found = self.entries(base, Scope::Subtree, filter, attr).await?;
        if found.len() > 1 {
            tracing::warn!(filter, entries = found.len(), "directory: a login matches several entries; refused");
            return Ok(None);
        }
        Ok(found.pop().map(|(dn, values)| (dn, values.into_iter().next())))
    }

    /// Is `member_dn` a member of the group `group_dn` (its `member`
    /// attribute; on Active Directory through nested groups too)?
    pub async fn is_member(&mut self, group_dn: &str, member_dn: &str) -> Result<bool, DirError> {
        let ad = match self.ad {
            Some(ad) => ad,
            None => {
                let ad = self.is_active_directory().await?;
                self.ad = Some(ad);
                ad
            }
        };
        let value = ldap3::ldap_escape(member_dn);
        let filter = if ad { format!("(member:{IN_CHAIN}:={value})") } else { format!("(member={value})") };
        Ok(!self.entries(group_dn, Scope::Base, &filter, None).await?.is_empty())
    }

    async fn is_active_directory(&mut self) -> Result<bool, DirError> {
        let mut ldap = self.ldap.clone();
        let r = self
            .timed(
                "reading the root DSE",
                ldap.search("", Scope::Base, "(objectClass=*)", vec!["supportedCapabilities"]),
            )
            .await?;
        Ok(r.0
            .into_iter()
            .filter_map(|e| entry(e, "supportedCapabilities"))
            .any(|(_, v)| v.iter().any(|v| v == AD_CAPABILITY)))
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ldap.unbind()).await;
    }
}

/// A search result entry's DN and the string values of `attr`
/// (case-insensitive name), read without ldap3's `SearchEntry::construct`
/// (which panics on BER it cannot parse).
fn entry(e: ldap3::ResultEntry, attr: &str) -> Option<(String, Vec<String>)> {
    let mut parts = e.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut out = Vec::new();
    for a in parts.next().and_then(|p| p.expect_constructed()).unwrap_or_default() {
        let mut kv = a.expect_constructed()?.into_iter();
        let name = String::from_utf8(kv.next()?.expect_primitive()?).ok()?;
        if !name.eq_ignore_ascii_case(attr) {
            continue;
        }
        for v in kv.next()?.expect_constructed()? {
            out.push(String::from_utf8(v.expect_primitive()?).ok()?);
        }
    }
    Some((dn, out))
}

/// The attribute a user filter matches the login against: the first
/// `(ATTR={login})` in it (`uid`, `sAMAccountName`).
pub fn login_attribute(filter: &str) -> Option<&str> {
    let i = filter.find("={login})")?;
    let start = filter[..i].rfind('(')? + 1;
    let a = &filter[start..i];
    (!a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then_some(a)
}

/// The user filter with `{login}` replaced by the RFC 4515-escaped login.
pub fn user_filter(template: &str, login: &str) -> String {
    template.replace("{login}", &ldap3::ldap_escape(login))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_attribute_comes_from_the_filter() {
        assert_eq!(login_attribute("(&(objectClass=user)(sAMAccountName={login}))"), Some("sAMAccountName"));
        assert_eq!(login_attribute("(|(uid={login})(mail={login}))"), Some("uid"));
        assert_eq!(login_attribute("(cn=x)"), None);
    }

    #[test]
    fn a_login_cannot_change_the_filter() {
        let f = user_filter("(&(objectClass=inetOrgPerson)(uid={login}))", "*)(uid=*");
        assert_eq!(f, "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))");
        assert!(ldap3::parse_filter(&f).is_ok());
        assert_eq!(user_filter("(uid={login})", "a\\b\0c"), "(uid=a\\5cb\\00c)");
        assert!(ldap3::parse_filter("(uid=x").is_err());
    }
}
