//! Checks and parsers for single values (a log filter, a listen address, an origin, a
//! duration), used by the sections' serde attributes and by [`Config::load`](super::Config::load).

use std::net::SocketAddr;

use serde::Deserialize;

/// Checks a `log.level` value: EnvFilter syntax, and every directive without `=` a level.
///
/// EnvFilter reads a bare word as a target to log at every level, and then logs nothing else:
/// `verbose` or `inf` were accepted and silenced the daemon entirely. A target alone is still
/// possible as `target=trace`.
pub fn check_log_filter(level: &str) -> Result<(), String> {
    use std::str::FromStr;
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("`{level}` is not a level or filter directive: {e}"));
    }
    let bare = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('='));
    for directive in bare {
        if tracing_subscriber::filter::LevelFilter::from_str(directive).is_err() {
            return Err(format!(
                "`{directive}` is not a level (error, warn, info, debug, trace or off); to \
                 filter by module write `module=level`, e.g. `info,indaba=debug`"
            ));
        }
    }
    Ok(())
}

/// A cookie name as RFC 6265 allows it (an HTTP token).
pub(super) fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `auth.session_check_url`: an absolute `http://` URL. The check runs on every new
/// cookie, so it is meant for the host app on loopback or a private network; HTTPS would add a
/// TLS stack for a hop that needs none.
pub(super) fn check_session_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "`{url}` must be an http:// URL of the host app (e.g. \
             http://127.0.0.1:8000/api/v1/auth/me/); https is not supported for this hop"
        ));
    }
    Ok(())
}

/// Checks one `http.cors_allowed_origins` entry: `"*"`, or an origin as browsers send it in
/// `Origin` (`scheme://host[:port]`, no path, no trailing `/`), which is what it is compared
/// with, byte for byte.
pub(super) fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let ok = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https")
            && !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@'])
            && authority.parse::<hyper::http::uri::Authority>().is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an origin: write scheme://host[:port] as the browser sends it \
             (e.g. https://app.example.com), with no path or trailing /, or \"*\""
        ))
    }
}

/// Reads a listen address: an IP address and port, or `localhost:PORT`, which is
/// `127.0.0.1:PORT` (one listener binds one address; IPv4 loopback is what `localhost` means
/// first on the systems the packages support). Other host names are refused rather than
/// resolved, so the address the daemon binds never depends on DNS at start.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "`{text}` is not an IP address and port: write e.g. 127.0.0.1:8765, 0.0.0.0:8765, \
         [::1]:8765 or localhost:8765 (other host names are not resolved)"
    ))
}

pub(super) fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// 1-based line and column of byte `offset` in `text`, as editors count them.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

pub(super) fn parse_literal(raw: &str) -> Option<toml::Value> {
    let doc: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    doc.get("v").cloned()
}

/// Durations written the human way: `"10s"`, `"1h 30m"`, `"500ms"`.
pub(super) mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"10s\" or \"1h\": {e}"
            ))
        })
    }
}
