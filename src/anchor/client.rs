//! Posting a time-stamp request to the TSA (RFC 3161 §3.4: HTTP POST of
//! `application/timestamp-query`, answered by `application/timestamp-reply`).

use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;

use super::tsp::MAX_REPLY;
use crate::config::AnchorConfig;

/// Send `query` (a DER `TimeStampReq`) and return the reply's DER bytes.
pub async fn post(cfg: &AnchorConfig, query: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    tokio::time::timeout(cfg.timeout, exchange(cfg, query))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the TSA within {}", humantime::format_duration(cfg.timeout)))?
}

async fn exchange(cfg: &AnchorConfig, query: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let uri: hyper::Uri = cfg.url.parse().with_context(|| format!("anchor.url {:?}", cfg.url))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().context("anchor.url has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("connecting to the TSA at {host}:{port}"))?;
    let mut req = Request::builder()
        .method("POST")
        .uri(&path)
        .header("host", if port == 80 || port == 443 { host.clone() } else { format!("{host}:{port}") })
        .header("content-type", "application/timestamp-query")
        .header("accept", "application/timestamp-reply");
    if let Some(f) = &cfg.credentials_file {
        let c = std::fs::read_to_string(f).with_context(|| format!("anchor.credentials_file {}", f.display()))?;
        req = req.header("authorization", format!("Basic {}", openssl::base64::encode_block(c.trim_end().as_bytes())));
    }
    let req = req.body(Full::new(bytes::Bytes::from(query)))?;
    let resp = if https {
        let tls = crate::tls::client_config(Some(&cfg.ca_file)).context("anchor: TLS trust")?;
        let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .with_context(|| format!("{host:?} as a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS with the TSA")?;
        send(stream, req).await?
    } else {
        send(tcp, req).await?
    };
    Ok(resp)
}

async fn send<S>(io: S, req: Request<Full<bytes::Bytes>>) -> anyhow::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.context("sending the request to the TSA")?;
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = Limited::new(resp.into_body(), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the TSA's reply: {e}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    if !status.is_success() {
        bail!("the TSA answered HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]).trim());
    }
    if !ct.is_empty() && !ct.starts_with("application/timestamp-reply") {
        bail!("the TSA answered {ct:?}, not application/timestamp-reply");
    }
    Ok(body)
}

/// How long to wait before the next attempt after `failures` in a row.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << failures.min(7)).min(600))
}
