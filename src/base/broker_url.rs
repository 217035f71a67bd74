//! MQTT broker URLs.

/// A broker URL that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker url `{url}`: {message}")]
pub struct BadBrokerUrl {
    pub url: String,
    pub message: String,
}

/// A parsed broker URL: `mqtt://host[:1883]` or `mqtts://host[:8883]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses and checks a broker URL.
    pub fn parse(s: &str) -> Result<BrokerUrl, BadBrokerUrl> {
        let bad = |message: &str| BadBrokerUrl { url: s.to_owned(), message: message.to_owned() };
        let u =
            url::Url::parse(s).map_err(|e| bad(&format!("{e}; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")))?;
        let tls = match u.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(bad(&format!("scheme `{other}` is not supported: use mqtt:// or mqtts://"))),
        };
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() {
            return Err(bad("a path or query is not allowed"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("put credentials in username/password_file, not in the url"));
        }
        Ok(BrokerUrl { tls, host, port: u.port().unwrap_or(if tls { 8883 } else { 1883 }) })
    }
}
