//! The SNS source's outbound calls: fetching signing certificates (cached by URL) and
//! confirming subscriptions.
//!
//! This is the one exception to "only `notify/` calls out": SNS cannot be trusted
//! without its certificate, and a subscription never starts without the confirmation
//! GET. Which URLs may be fetched is decided by `sns.rs` before anything here runs;
//! this file only fetches, bounds sizes and times, and caches.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest a certificate fetch or a confirmation may take; SNS gives up on a delivery
/// after 15 s, so this leaves room to answer within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A signing certificate is about 2 KB; anything far larger is not one.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// The confirmation answer is a short XML document that is not read.
const MAX_CONFIRMATION_BYTES: usize = 64 * 1024;
/// SNS signs with one certificate per region at a time (plus one during a rotation), so
/// a few dozen entries cover every region a source could hear from.
const CACHE_ENTRIES: usize = 32;

/// An RSA public key taken from a signing certificate, with the certificate's validity.
#[derive(Debug)]
pub struct SigningKey {
    /// DER `RSAPublicKey`, as ring's RSA verification wants it.
    pub rsa_der: Vec<u8>,
    pub not_before_secs: i64,
    pub not_after_secs: i64,
}

/// Fetches over HTTPS (or, for tests, plain HTTP to one loopback address).
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    connect_to: Option<SocketAddr>,
    /// Held only to look up or insert; never across an await.
    cache: Mutex<VecDeque<(String, Arc<SigningKey>)>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("connect_to", &self.connect_to)
            .finish_non_exhaustive()
    }
}

/// Why a call failed; every variant is a 502 to the sender, who retries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("{0} did not answer: {1}")]
    Unreachable(String, String),
    #[error("{0} answered HTTP {1}")]
    Status(String, u16),
    #[error("{0} is not a usable signing certificate: {1}")]
    NotACertificate(String, String),
}

impl Fetcher {
    /// `connect_to` sends every call to that loopback address over plain HTTP, with the
    /// URL's host in `Host`; the URL itself is checked as in production.
    pub fn new(connect_to: Option<SocketAddr>) -> Self {
        // Plain http is accepted by the connector only so that `connect_to` works: URLs
        // are required to be https before they get here.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            connect_to,
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// The key of the certificate at `url`, from the cache or fetched.
    ///
    /// The certificate's own chain is not checked: what vouches for it is the TLS
    /// connection to an allowed AWS host, which webpki verifies, so a chain check would
    /// add something only if `allowed_hosts` named hosts that are not AWS's.
    // FIXME: failed fetches are not remembered, so a sender who knows an allowed topic
    // can make every request cost one fetch from an allowed host; a short negative cache
    // per URL would bound that.
    pub async fn signing_key(&self, url: &url::Url) -> Result<Arc<SigningKey>, FetchError> {
        let key = url.as_str();
        if let Some(found) = self.cached(key) {
            return Ok(found);
        }
        let (status, body) = self.get(url, MAX_CERTIFICATE_BYTES).await?;
        if status != 200 {
            return Err(FetchError::Status(shown(url), status));
        }
        let parsed = Arc::new(
            signing_key_from_pem(&body).map_err(|e| FetchError::NotACertificate(shown(url), e))?,
        );
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back((key.to_string(), parsed.clone()));
        Ok(parsed)
    }

    fn cached(&self, url: &str) -> Option<Arc<SigningKey>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .find(|(cached, _)| cached == url)
            .map(|(_, key)| key.clone())
    }

    /// How many certificates are cached, for tests of the bound.
    pub fn cached_certificates(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Visits `SubscribeURL`; any 2xx confirms the subscription.
    pub async fn confirm(&self, url: &url::Url) -> Result<(), FetchError> {
        let (status, _) = self.get(url, MAX_CONFIRMATION_BYTES).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(FetchError::Status(shown(url), status))
        }
    }

    async fn get(&self, url: &url::Url, limit: usize) -> Result<(u16, Bytes), FetchError> {
        let mut request = axum::http::Request::get(url.as_str());
        if let Some(addr) = self.connect_to {
            let path = &url[url::Position::BeforePath..];
            request = axum::http::Request::get(format!("http://{addr}{path}"))
                .header("host", url.host_str().unwrap_or_default());
        }
        let request = request
            .header(
                "user-agent",
                concat!("backchannel/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Unreachable(shown(url), e.to_string()))?;
        let unreachable = |e: String| FetchError::Unreachable(shown(url), e);
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
    }
}

/// A URL as it may be shown to the sender and in logs: without its query, which for
/// `SubscribeURL` holds the confirmation token.
fn shown(url: &url::Url) -> String {
    url[..url::Position::AfterPath].to_string()
}

/// The RSA key and validity of the first certificate in a PEM document.
pub fn signing_key_from_pem(pem: &[u8]) -> Result<SigningKey, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM ({e})"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", pem.label));
    }
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let key = certificate.public_key();
    match key.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => {}
        _ => return Err("the public key is not RSA".into()),
    }
    let validity = certificate.validity();
    Ok(SigningKey {
        rsa_der: key.subject_public_key.data.to_vec(),
        not_before_secs: validity.not_before.timestamp(),
        not_after_secs: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_CERT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/aws/sns_signing_cert_7ff5318490ec183fbaddaa2a969abfda.pem"
    );

    #[test]
    fn the_real_certificate_gives_its_rsa_key_and_validity() {
        let key = signing_key_from_pem(&std::fs::read(REAL_CERT).unwrap()).unwrap();
        // Sep  7 00:00:00 2021 GMT .. Aug 17 23:59:59 2022 GMT, as `openssl x509 -dates`
        // prints them.
        assert_eq!(key.not_before_secs, 1_630_972_800);
        assert_eq!(key.not_after_secs, 1_660_780_799);
        // A 2048-bit modulus in a DER RSAPublicKey is 270 bytes.
        assert_eq!(key.rsa_der.len(), 270);
    }

    #[test]
    fn things_that_are_not_certificates() {
        assert!(signing_key_from_pem(b"").is_err());
        assert!(signing_key_from_pem(b"<html>not found</html>").is_err());
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(
            signing_key_from_pem(key)
                .unwrap_err()
                .contains("PRIVATE KEY")
        );
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(signing_key_from_pem(junk).is_err());
    }

    #[test]
    fn the_shown_url_drops_the_query() {
        let url =
            url::Url::parse("https://sns.us-east-1.amazonaws.com/?Action=X&Token=s3").unwrap();
        assert_eq!(shown(&url), "https://sns.us-east-1.amazonaws.com/");
    }

    /// Every path answers with the real certificate; counts the requests.
    async fn certificate_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let pem = std::fs::read(REAL_CERT).unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(pem.clone())
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, hits)
    }

    #[tokio::test]
    async fn the_cache_is_by_url_and_bounded() {
        crate::install_crypto_provider();
        let (addr, hits) = certificate_server().await;
        let fetcher = Fetcher::new(Some(addr));
        let url = |n: usize| {
            url::Url::parse(&format!("https://sns.us-east-1.amazonaws.com/cert-{n}.pem")).unwrap()
        };
        for n in 0..CACHE_ENTRIES + 8 {
            fetcher.signing_key(&url(n)).await.unwrap();
            fetcher.signing_key(&url(n)).await.unwrap();
        }
        let fetched = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            fetched,
            CACHE_ENTRIES + 8,
            "each URL once while it is cached"
        );
        assert_eq!(fetcher.cached_certificates(), CACHE_ENTRIES);
        // The oldest entries made room for the newest.
        fetcher.signing_key(&url(0)).await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), fetched + 1);
        fetcher.signing_key(&url(CACHE_ENTRIES + 7)).await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), fetched + 1);
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        crate::install_crypto_provider();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let fetcher = Fetcher::new(Some(addr));
        let url = url::Url::parse("https://sns.us-east-1.amazonaws.com/?Action=X&Token=t").unwrap();
        let error = fetcher.confirm(&url).await.unwrap_err();
        assert!(matches!(error, FetchError::Unreachable(..)), "{error}");
        assert!(!error.to_string().contains("Token"), "{error}");
    }
}
