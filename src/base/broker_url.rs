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

    /// Parses a failover list (`mqtt.urls`, `--broker A,B`): at least one URL, each valid, no broker twice.
    pub fn parse_list(urls: &[String]) -> Result<Vec<BrokerUrl>, BadBrokerUrl> {
        if urls.is_empty() {
            return Err(BadBrokerUrl { url: String::new(), message: "the broker list is empty".into() });
        }
        let mut out: Vec<BrokerUrl> = Vec::with_capacity(urls.len());
        for s in urls {
            let u = BrokerUrl::parse(s)?;
            if out.iter().any(|o| o.host == u.host && o.port == u.port) {
                return Err(BadBrokerUrl {
                    url: s.clone(),
                    message: "this broker is listed twice: list each broker once".into(),
                });
            }
            out.push(u);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_lists_need_one_url_each_valid_and_no_broker_twice() {
        let list = |v: &[&str]| BrokerUrl::parse_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let ok = list(&["mqtt://a:1883", "mqtts://b", "mqtt://a:1884"]).unwrap();
        assert_eq!(ok.iter().map(|u| u.port).collect::<Vec<_>>(), [1883, 8883, 1884]);
        assert!(list(&[]).unwrap_err().to_string().contains("empty"));
        let e = list(&["mqtt://a", "mqtt://a:1883"]).unwrap_err();
        assert_eq!(e.url, "mqtt://a:1883");
        assert!(e.to_string().contains("listed twice"), "{e}");
        assert!(list(&["mqtt://a", "http://b"]).unwrap_err().to_string().contains("http://b"));
    }
}
