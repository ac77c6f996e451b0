//! The HTTP client that POSTs batches: hyper-util's pooled client over hyper-rustls.
//!
//! TLS is rustls with the *ring* provider (a C compiler is all it needs to build; aws-lc-rs
//! would need cmake) and the system's root certificates (`rustls-native-certs`), as
//! PROTOCOL.md section 8.2 asks: operators trust what the OS trusts, their own CA for an
//! internal host included, and the roots follow the OS's updates rather than our releases.
//! Certificates are always verified; there is no switch to turn that off. Redirects are not
//! followed (a 3xx is a failure, retried): a signed batch goes only where it was configured to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{WebhooksConfig, parse_auth_header};

/// Bytes of an answer's body read (and then dropped) so its connection can be reused.
const ANSWER_BYTES: usize = 64 * 1024;

/// How long an idle connection to the host is kept for the next batch.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why the client could not be built (the daemon does not start).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "`webhooks.url` is https but no root certificate could be loaded from the system: {0} (install the ca-certificates package)"
    )]
    Roots(std::io::Error),
    #[error("`webhooks.url`: {0}")]
    Url(String),
    #[error("`webhooks.auth_header`: {0}")]
    AuthHeader(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("no answer within webhooks.timeout ({0:?})")]
    Timeout(Duration),
    #[error("{0}")]
    Request(String),
}

/// Where batches go, and how.
#[derive(Debug, Clone)]
pub struct Sink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    auth_header: Option<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Sink {
    /// The client for `config` (webhooks on: `url` is set and was checked by the config).
    pub fn new(config: &WebhooksConfig) -> Result<Self, ClientError> {
        let url: Uri = config
            .url
            .as_deref()
            .ok_or_else(|| ClientError::Url("not set".to_owned()))?
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ClientError::Url(e.to_string()))?;
        let auth_header = config
            .auth_header
            .as_ref()
            .map(|h| parse_auth_header(h.expose()))
            .transpose()
            .map_err(ClientError::AuthHeader)?;
        // Deprecated in rustls 0.23.48 for lacking post-quantum key exchange, which only the
        // aws-lc-rs provider has, and aws-lc-rs needs cmake to build (the CI machine has the
        // Rust toolchain and a C compiler only). Classical X25519/ECDHE is what the host's
        // TLS offers today anyway.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if url.scheme_str() == Some("https") {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(ClientError::Roots)?
        } else {
            // Plain HTTP: no TLS is ever made, so no roots are needed (a host without
            // ca-certificates posting to 127.0.0.1 still starts).
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Self {
            client,
            url,
            auth_header,
            timeout: config.timeout,
        })
    }

    /// POSTs `body` with its signature and delivery id; answers the status, once the answer's
    /// body is read (so the connection can carry the next batch). The whole exchange is
    /// bounded by `webhooks.timeout`.
    pub async fn post(
        &self,
        body: Bytes,
        signature: &str,
        delivery: u64,
    ) -> Result<StatusCode, PostError> {
        let mut request = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("indaba/", env!("CARGO_PKG_VERSION")))
            .header("x-indaba-signature", signature)
            .header("x-indaba-delivery", delivery.to_string());
        if let Some((name, value)) = &self.auth_header {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| PostError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PostError::Request(error_chain(&e)))?;
            let status = response.status();
            // The answer's body is not used; reading it lets the connection be reused. One too
            // large only costs the connection.
            let _ = Limited::new(response.into_body(), ANSWER_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::Timeout(self.timeout))?
    }
}

/// An error and its causes, one line (hyper's top-level error alone says only "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
