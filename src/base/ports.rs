//! Published ports: `[IP:]HOST:CONTAINER[/tcp|udp]`, as `docker run -p` writes them (`8080:80`,
//! `127.0.0.1:5000:5000/udp`, `[::1]:8443:443`). A mapping makes the host listen on `HOST` (on `IP`, or every
//! address) and forwards to `CONTAINER` in a bridge-networked container.
//!
//! Pure parsing and validation; what a published port may bind is the local policy's decision.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NetworkMode;

/// Most ports one container may publish (a bound on the rules and listeners a document can make).
pub const MAX_PORTS: usize = 64;

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The host address to listen on; `None`: every address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(f, "{}:{}/{}", self.host_port, self.container_port, self.protocol)
    }
}

fn port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{what} `{s}` must be a number from 1 to 65535")),
        Ok(p) => Ok(p),
    }
}

impl FromStr for PortMapping {
    type Err = String;

    /// Parses `[IP:]HOST:CONTAINER[/tcp|udp]`; an IPv6 address is written in brackets.
    fn from_str(s: &str) -> Result<Self, String> {
        let form = "use [IP:]HOST:CONTAINER[/tcp|udp], e.g. \"8080:80\" or \"127.0.0.1:5000:5000/udp\"";
        let (ports, protocol) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => return Err(format!("`{s}`: protocol `{other}` must be tcp or udp")),
            None => (s, Protocol::Tcp),
        };
        let (ip, rest) = if let Some(after) = ports.strip_prefix('[') {
            let (ip, rest) = after.split_once("]:").ok_or_else(|| format!("`{s}`: unclosed `[` ({form})"))?;
            (Some(ip), rest)
        } else {
            match ports.matches(':').count() {
                0 => return Err(format!("`{s}` has no container port: {form}")),
                1 => (None, ports),
                2 => {
                    let (ip, rest) = ports.split_once(':').expect("two colons");
                    (Some(ip), rest)
                }
                _ => return Err(format!("`{s}` is not a port mapping: {form} (IPv6 addresses in brackets)")),
            }
        };
        let (host, container) = rest.split_once(':').ok_or_else(|| format!("`{s}` has no container port: {form}"))?;
        let host_ip = match ip {
            None => None,
            Some(ip) => {
                let parsed = ip.parse::<IpAddr>().map_err(|_| format!("`{s}`: `{ip}` is not an IP address"))?;
                if parsed.is_multicast() {
                    return Err(format!("`{s}`: `{ip}` is a multicast address; use a host address or leave it out"));
                }
                Some(parsed).filter(|a| !a.is_unspecified())
            }
        };
        Ok(Self {
            host_ip,
            host_port: port(host, &format!("`{s}`: host port"))?,
            container_port: port(container, &format!("`{s}`: container port"))?,
            protocol,
        })
    }
}

impl Serialize for PortMapping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a list of mappings, checking the list as a whole: at most [`MAX_PORTS`], and no host port published
/// twice for one protocol where the addresses overlap (every address overlaps each). Each problem comes with
/// the index of the entry it is about.
pub fn parse_list(specs: &[String]) -> Result<Vec<PortMapping>, Vec<(usize, String)>> {
    let mut problems = Vec::new();
    if specs.len() > MAX_PORTS {
        problems.push((MAX_PORTS, format!("{} ports; at most {MAX_PORTS} may be published", specs.len())));
    }
    let mut parsed: Vec<PortMapping> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        match spec.parse::<PortMapping>() {
            Err(e) => problems.push((i, e)),
            Ok(m) => {
                let clash = parsed.iter().find(|p| {
                    p.protocol == m.protocol
                        && p.host_port == m.host_port
                        && (p.host_ip.is_none() || m.host_ip.is_none() || p.host_ip == m.host_ip)
                });
                if let Some(other) = clash {
                    problems.push((i, format!("`{spec}` publishes the host port of `{other}` again")));
                }
                parsed.push(m);
            }
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Refuses published ports on a container that is not bridge-networked: with host networking the container's
/// own listeners are the host's already, and `none` has nothing to forward to.
pub fn require_bridge(network: NetworkMode, ports: &[PortMapping]) -> Result<(), String> {
    if ports.is_empty() || network == NetworkMode::Bridge {
        return Ok(());
    }
    Err(format!(
        "published ports ({}) need the bridge network: use network = \"bridge\" (--network bridge)",
        ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    ))
}

/// Every problem of a document's `ports` (entries as written) under `network`, reported through `bad(index,
/// message)`: what [`parse_list`] and [`require_bridge`] refuse.
pub fn problems(network: NetworkMode, specs: &[String], bad: &mut impl FnMut(usize, String)) {
    match parse_list(specs) {
        Err(list) => list.into_iter().for_each(|(i, m)| bad(i, m)),
        Ok(parsed) => {
            if let Err(m) = require_bridge(network, &parsed) {
                bad(0, m);
            }
        }
    }
}

/// An inclusive range of host ports (`1024-65535` or `8080`), the form of `policy.allowed_host_ports`.
pub(crate) fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo = port(lo.trim(), "port")?;
    let hi = port(hi.trim(), "port")?;
    if lo > hi {
        return Err(format!("`{s}`: {lo} is above {hi}; write LOW-HIGH"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortMapping {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_forms_parse_and_print_back() {
        let m = p("8080:80");
        assert_eq!((m.host_ip, m.host_port, m.container_port, m.protocol), (None, 8080, 80, Protocol::Tcp));
        let m = p("127.0.0.1:5000:5000/udp");
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(m.protocol, Protocol::Udp);
        assert_eq!(m.to_string(), "127.0.0.1:5000:5000/udp");
        let m = p("[::1]:8443:443/tcp");
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(m.to_string(), "[::1]:8443:443/tcp");
        assert_eq!(p("0.0.0.0:80:80").host_ip, None, "the unspecified address means every address");
        assert_eq!(p(&m.to_string()), m);
    }

    #[test]
    fn bad_mappings_are_refused_with_the_reason() {
        for (bad, why) in [
            ("80", "no container port"),
            ("0:80", "host port `0`"),
            ("70000:80", "host port `70000`"),
            ("8080:0", "container port `0`"),
            ("8080:80/sctp", "protocol `sctp`"),
            ("300.1.1.1:80:80", "not an IP address"),
            ("::1:80:80", "IPv6 addresses in brackets"),
            ("[::1:80:80", "unclosed"),
            ("224.0.0.1:80:80", "multicast"),
            ("a:b", "host port `a`"),
            ("", "no container port"),
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_host_port_published_twice_is_refused() {
        let list = |v: &[&str]| parse_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["8080:80", "8080:80/udp", "127.0.0.1:9000:90", "127.0.0.2:9000:90"]).unwrap().len(), 4);
        let e = list(&["8080:80", "127.0.0.1:8080:81"]).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 1);
        assert!(e[0].1.contains("again"), "{e:?}");
        let e = list(&["1:1", "x", "1:2"]).unwrap_err();
        assert_eq!(e.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
        let many: Vec<String> = (1..=65).map(|i| format!("{}:80", 1000 + i)).collect();
        assert!(parse_list(&many).unwrap_err()[0].1.contains("at most 64"));
    }

    #[test]
    fn ports_need_the_bridge_network() {
        let ports = [p("8080:80")];
        assert!(require_bridge(NetworkMode::Host, &ports).unwrap_err().contains("network = \"bridge\""));
        assert!(require_bridge(NetworkMode::None, &ports).is_err());
        assert!(require_bridge(NetworkMode::Bridge, &ports).is_ok());
        assert!(require_bridge(NetworkMode::Host, &[]).is_ok());
        let mut seen = Vec::new();
        problems(NetworkMode::Host, &["8080:80".into()], &mut |i, m| seen.push((i, m)));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("1024-65535"), Ok((1024, 65535)));
        assert_eq!(parse_range("8080"), Ok((8080, 8080)));
        assert!(parse_range("9000-80").is_err());
        assert!(parse_range("0-80").is_err());
    }
}
