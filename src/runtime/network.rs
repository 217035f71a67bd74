//! Bridge networking of the native backend: one network namespace per container ([`super::netns`]) joined
//! to the agent's bridge by the standard CNI plugins ([`super::cni`]: `bridge` with `host-local` addresses,
//! `portmap` for published ports, `firewall` to let the traffic through, `loopback` for `lo`), and the
//! container's `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`. Also the Docker backend's port map, so
//! both backends read `ports` one way.
//!
//! Owns `<state_dir>/network/`: `containers/<id>/` (the record of what was asked and what ADD returned, kept
//! across reboots so DEL can free the address after one, and the three files) and `ipam/` (host-local's
//! leases). A container is *attached* while it has a namespace and an ADD result; [`Network::detach`] undoes
//! that (DEL, namespace unmounted, lease freed) and keeps the record, [`Network::remove`] drops the record
//! too. Never decides policy: the ports arrive checked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{cni, netns};
use crate::base::PortMapping;

/// The nameservers Docker gives a container when the host has none it could reach from a bridge.
pub(crate) const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// Most bytes of a host resolv.conf read.
const MAX_RESOLV_BYTES: u64 = 64 * 1024;

/// The interface name inside the container.
pub(crate) const IFNAME: &str = "eth0";

/// A failure to attach or detach a container, with the container named.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {id}: bridge network: {source}")]
    Cni {
        id: String,
        #[source]
        source: cni::Error,
    },
    #[error("container {id}: bridge network: {context}: {source}")]
    Io {
        id: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where the network config and state are; from `[network]`, `state_dir`, `runtime.run_dir` and `host.root`.
#[derive(Debug, Clone)]
pub struct Network {
    /// `network.bridge`: the bridge's name, also the CNI network's name.
    pub bridge: String,
    /// `network.subnet`: the IPv4 subnet addresses come from.
    pub subnet: String,
    /// `network.cni_path`: directories searched for the plugins.
    pub cni_path: Vec<PathBuf>,
    /// `<state_dir>/network`.
    pub state: PathBuf,
    /// `runtime.run_dir`: the namespaces live under it.
    pub run_dir: PathBuf,
    /// `host.root`: where the host's resolv.conf is read.
    pub host_root: PathBuf,
}

/// The host paths a bridge container's spec names: its namespace and the files mounted on `/etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeFiles {
    pub netns: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname: PathBuf,
}

/// What is kept for a container: what it asked for and, while attached, what ADD was given and returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    hostname: String,
    ports: Vec<PortMapping>,
    attached: Option<Attached>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attached {
    conflist: Value,
    runtime_config: Value,
    /// `None` between the start of ADD and its end (a crash there still gets a DEL).
    result: Option<Value>,
}

impl Network {
    /// The settings a config gives.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            bridge: cfg.network.bridge.clone(),
            subnet: cfg.network.subnet.clone(),
            cni_path: cfg.network.cni_path.clone(),
            state: cfg.state_dir.join("network"),
            run_dir: cfg.runtime.run_dir.clone(),
            host_root: cfg.host.root.clone(),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state.join("containers").join(id)
    }

    /// host-local's lease directory (one file per address, named by it, holding the container id).
    pub(crate) fn ipam_dir(&self) -> PathBuf {
        self.state.join("ipam")
    }

    /// The paths container `id`'s spec names.
    pub fn files(&self, id: &str) -> BridgeFiles {
        let dir = self.dir(id);
        BridgeFiles {
            netns: netns::path(&self.run_dir, id),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
        }
    }

    /// The CNI configuration list of the bridge: addresses from `subnet` with a default route through the
    /// bridge (masqueraded), published ports through portmap (also from the host's own 127.0.0.1), and the
    /// firewall plugin's forwarding rules.
    pub(crate) fn conflist(&self) -> Value {
        json!({
            "cniVersion": cni::CNI_VERSION,
            "name": self.bridge,
            "plugins": [
                {
                    "type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.ipam_dir(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "firewall", "backend": "iptables"},
            ],
        })
    }

    fn loopback(&self) -> Value {
        json!({"cniVersion": cni::CNI_VERSION, "name": format!("{}-lo", self.bridge), "plugins": [{"type": "loopback"}]})
    }

    fn io(id: &str, context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let context = context.into();
        move |source| Error::Io { id: id.to_owned(), context, source }
    }

    fn read(&self, id: &str) -> Result<Option<Record>> {
        let path = self.dir(id).join("record.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Self::io(id, format!("{} is unreadable", path.display()))(std::io::Error::other(e.to_string()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(id, format!("reading {}", path.display()))(e)),
        }
    }

    fn write(&self, id: &str, record: &Record) -> Result<()> {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).map_err(Self::io(id, format!("creating {}", dir.display())))?;
        let json = serde_json::to_vec_pretty(record).expect("record serializes");
        crate::os::fsutil::write_atomic(&dir.join("record.json"), &json).map_err(Self::io(id, "writing its record"))
    }

    /// Records that container `id` is bridge-networked with `hostname` and `ports` (not attached yet).
    pub(crate) fn prepare(&self, id: &str, hostname: &str, ports: &[PortMapping]) -> Result<BridgeFiles> {
        self.write(id, &Record { hostname: hostname.to_owned(), ports: ports.to_vec(), attached: None })?;
        Ok(self.files(id))
    }

    /// Whether container `id` has a record (it is bridge-networked).
    pub fn has(&self, id: &str) -> bool {
        self.dir(id).join("record.json").exists()
    }

    /// Whether container `id` is attached: a mounted namespace and an ADD result.
    pub(crate) fn is_attached(&self, id: &str) -> bool {
        let finished =
            matches!(self.read(id), Ok(Some(Record { attached: Some(Attached { result: Some(_), .. }), .. })));
        finished && netns::is_mounted(&netns::path(&self.run_dir, id))
    }

    /// Whether container `id` holds anything of the network: an attachment in its record (even one a reboot
    /// took the namespace of: its address lease is still taken) or a namespace file.
    pub(crate) fn holds_anything(&self, id: &str) -> bool {
        matches!(self.read(id), Ok(Some(Record { attached: Some(_), .. }))) || netns::path(&self.run_dir, id).exists()
    }

    /// Attaches container `id` (prepared before): a new namespace, loopback up, ADD of the bridge list with
    /// its ports, then its /etc files. An attachment that is still there is kept when CHECK passes; one left
    /// half made, or taken apart (a reboot, a deleted veth), is detached first. Returns the container's address.
    pub fn attach(&self, id: &str) -> Result<Option<IpAddr>> {
        if self.is_attached(id) {
            // Still attached (a container that exited by itself, started again before a sweep): kept when CHECK
            // finds it as ADD left it, else made anew.
            let record = self.read(id)?.and_then(|r| r.attached).filter(|a| a.result.is_some());
            if let Some(Attached { conflist, runtime_config, result: Some(result) }) = record {
                let path = netns::path(&self.run_dir, id);
                let at = cni::Attachment { container_id: id, netns: &path, ifname: IFNAME, cni_path: &self.cni_path };
                match cni::check(&conflist, &runtime_config, &result, &at) {
                    Ok(()) => return Ok(address(&result)),
                    Err(e) if portmap_ipv6_check_bug(&e, &result) => return Ok(address(&result)),
                    Err(e) => tracing::warn!(container = %id, err = %e, "CNI CHECK failed; attaching it anew"),
                }
            }
        }
        self.detach(id)?;
        let Some(mut record) = self.read(id)? else {
            return Err(Self::io(id, "attaching")(std::io::Error::other("the container was not prepared")));
        };
        let files = self.files(id);
        netns::create(&files.netns).map_err(Self::io(id, format!("creating {}", files.netns.display())))?;
        let mappings: Vec<Value> = record.ports.iter().map(port_mapping).collect();
        let attached =
            Attached { conflist: self.conflist(), runtime_config: json!({ "portMappings": mappings }), result: None };
        record.attached = Some(attached.clone());
        self.write(id, &record)?;
        let at = cni::Attachment { container_id: id, netns: &files.netns, ifname: IFNAME, cni_path: &self.cni_path };
        let added = cni::add(&self.loopback(), &json!({}), &cni::Attachment { ifname: "lo", ..at.clone() })
            .and_then(|_| cni::add(&attached.conflist, &attached.runtime_config, &at));
        let result = match added {
            Ok(r) => r,
            Err(source) => {
                if let Err(e) = self.detach(id) {
                    tracing::warn!(container = %id, err = %e, "cleaning up after a failed CNI ADD");
                }
                return Err(Error::Cni { id: id.to_owned(), source });
            }
        };
        let ip = address(&result);
        record.attached = Some(Attached { result: Some(result), ..attached });
        self.write(id, &record)?;
        self.write_files(id, &record.hostname, ip)?;
        tracing::info!(container = %id, bridge = %self.bridge, ip = ?ip, ports = record.ports.len(), "attached to the bridge");
        Ok(ip)
    }

    fn write_files(&self, id: &str, hostname: &str, ip: Option<IpAddr>) -> Result<()> {
        let files = self.files(id);
        let under = |abs: &str| crate::os::fsutil::under_root(&self.host_root, abs);
        let host = crate::os::fsutil::read_small(&under("/etc/resolv.conf"), MAX_RESOLV_BYTES).unwrap_or_default();
        let upstream = crate::os::fsutil::read_small(&under("/run/systemd/resolve/resolv.conf"), MAX_RESOLV_BYTES).ok();
        for (path, text) in [
            (&files.resolv_conf, resolv_conf(&host, upstream.as_deref())),
            (&files.hosts, hosts(hostname, ip)),
            (&files.hostname, format!("{hostname}\n")),
        ] {
            crate::os::fsutil::write_atomic(path, text.as_bytes())
                .map_err(Self::io(id, format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// Detaches container `id`: DEL with the kept result (the plugins remove the veth pair, the port and
    /// firewall rules and free the address), then the namespace unmounted and removed. The record stays, so
    /// a later [`Network::attach`] can attach it again. Nothing attached is not an error.
    pub fn detach(&self, id: &str) -> Result<()> {
        let path = netns::path(&self.run_dir, id);
        if let Some(mut record) = self.read(id)? {
            if let Some(a) = &record.attached {
                let at = cni::Attachment { container_id: id, netns: &path, ifname: IFNAME, cni_path: &self.cni_path };
                cni::del(&a.conflist, &a.runtime_config, a.result.as_ref(), &at)
                    .and_then(|_| cni::del(&self.loopback(), &json!({}), None, &cni::Attachment { ifname: "lo", ..at }))
                    .map_err(|source| Error::Cni { id: id.to_owned(), source })?;
                record.attached = None;
                self.write(id, &record)?;
                tracing::info!(container = %id, bridge = %self.bridge, "detached from the bridge");
            }
        }
        netns::remove(&path).map_err(Self::io(id, format!("removing {}", path.display())))
    }

    /// Detaches container `id` and drops its record and files.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.detach(id)?;
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(id, format!("removing {}", dir.display()))(e)),
        }
    }

    /// Every container id with a record or a namespace file: what a sweep after a crash looks at.
    pub fn known(&self) -> Vec<String> {
        let mut ids = netns::list(&self.run_dir);
        for e in std::fs::read_dir(self.state.join("containers")).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if super::conmon::valid_id(&id) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.sort();
        ids
    }
}

/// portmap before 1.2 fails CHECK on an IPv4-only attachment looking for IPv6 rules it never made
/// (containernetworking/plugins#819). The plugins before it in the list (bridge: the veth, the address) have
/// passed by then, so the attachment is taken as sound.
fn portmap_ipv6_check_bug(e: &cni::Error, result: &Value) -> bool {
    let ipv4_only = result["ips"]
        .as_array()
        .is_some_and(|ips| ips.iter().all(|ip| ip["address"].as_str().is_some_and(|a| !a.contains(':'))));
    matches!(e, cni::Error::Failed { plugin, command: "CHECK", message } if plugin == "portmap" && message.contains("ipv6"))
        && ipv4_only
}

/// The address ADD gave the container (the first of `ips`).
fn address(result: &Value) -> Option<IpAddr> {
    let cidr = result.get("ips")?.as_array()?.first()?.get("address")?.as_str()?;
    cidr.split('/').next()?.parse().ok()
}

/// A port in the form of the `portMappings` capability.
fn port_mapping(p: &PortMapping) -> Value {
    let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.to_string()});
    if let Some(ip) = p.host_ip {
        m["hostIP"] = json!(ip.to_string());
    }
    m
}

fn is_loopback_nameserver(line: &str) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("nameserver")
        && words.next().and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok()).is_some_and(|a| a.is_loopback())
}

fn has_usable_nameserver(text: &str) -> bool {
    text.lines().any(|l| l.split_whitespace().next() == Some("nameserver") && !is_loopback_nameserver(l))
}

/// A bridge container's resolv.conf from the host's (`host`): a loopback nameserver (systemd-resolved's
/// 127.0.0.53 stub, a local dnsmasq) cannot be reached from the container's namespace, so it is dropped. When
/// the host has no other, systemd-resolved's own upstream list (`upstream`,
/// /run/systemd/resolve/resolv.conf) is used; when that has none either, Docker's fallback nameservers.
pub(crate) fn resolv_conf(host: &str, upstream: Option<&str>) -> String {
    let source = match upstream {
        Some(u) if !has_usable_nameserver(host) && has_usable_nameserver(u) => u,
        _ => host,
    };
    let mut out: String = source.lines().filter(|l| !is_loopback_nameserver(l)).map(|l| format!("{l}\n")).collect();
    if !has_usable_nameserver(source) {
        out.push_str("# the host's nameservers are loopback only (unreachable from a bridge); Docker's fallback:\n");
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// A bridge container's /etc/hosts: loopback names and its own address under its hostname.
pub fn hosts(hostname: &str, ip: Option<IpAddr>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// The hostname of a bridge container: the deployment's, else its id (at most 63 characters, as a DNS label).
pub fn hostname(config_hostname: Option<&str>, id: &str) -> String {
    config_hostname.unwrap_or(id).chars().take(63).collect()
}

/// The Docker Engine's `ExposedPorts` for `ports` (`80/tcp`).
pub(crate) fn docker_exposed_ports(ports: &[PortMapping]) -> Vec<String> {
    let mut out: Vec<String> = ports.iter().map(|p| format!("{}/{}", p.container_port, p.protocol)).collect();
    out.sort();
    out.dedup();
    out
}

/// The Docker Engine's `HostConfig.PortBindings` for `ports`: each container port with its host bindings.
pub(crate) fn docker_port_bindings(
    ports: &[PortMapping],
) -> HashMap<String, Option<Vec<bollard::models::PortBinding>>> {
    let mut map: HashMap<String, Option<Vec<bollard::models::PortBinding>>> = HashMap::new();
    for p in ports {
        let binding = bollard::models::PortBinding {
            host_ip: p.host_ip.map(|ip| ip.to_string()),
            host_port: Some(p.host_port.to_string()),
        };
        map.entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    map
}

#[cfg(test)]
/// The bridge files named after `dir` (the unit tests' spec input).
fn files_in(dir: &std::path::Path) -> BridgeFiles {
    BridgeFiles {
        netns: dir.join("netns"),
        resolv_conf: dir.join("resolv.conf"),
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_stub_resolver_is_replaced_by_what_a_bridge_can_reach() {
        let stub = "# systemd-resolved stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.168.1.1\nnameserver fe80::1%eth0\nsearch lan\n";
        assert_eq!(resolv_conf(stub, Some(upstream)), upstream);
        let fallback = resolv_conf(stub, None);
        assert!(!fallback.contains("127.0.0.53"), "{fallback}");
        assert!(fallback.contains("options edns0 trust-ad") && fallback.contains("search lan"), "{fallback}");
        assert!(fallback.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"), "{fallback}");
        let mixed = "nameserver 127.0.0.1\nnameserver 10.0.0.2\n";
        assert_eq!(resolv_conf(mixed, Some(upstream)), "nameserver 10.0.0.2\n");
        let only_loopback = resolv_conf("nameserver ::1\n", Some("nameserver 127.0.0.1\n"));
        assert_eq!(only_loopback.lines().filter(|l| l.starts_with("nameserver ")).count(), 2, "{only_loopback}");
    }

    #[test]
    fn hosts_name_the_container_address() {
        let h = hosts("web", Some("10.89.0.7".parse().unwrap()));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n") && h.ends_with("10.89.0.7\tweb\n"), "{h}");
        assert_eq!(hostname(None, &"x".repeat(80)).len(), 63);
        assert_eq!(hostname(Some("cam"), "id"), "cam");
    }

    #[test]
    fn ports_take_the_cni_and_the_docker_forms() {
        let ports: Vec<PortMapping> =
            ["127.0.0.1:8080:80", "8081:80", "5000:5000/udp"].map(|s| s.parse().unwrap()).to_vec();
        assert_eq!(
            port_mapping(&ports[0]),
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
        assert!(port_mapping(&ports[1]).get("hostIP").is_none());
        assert_eq!(docker_exposed_ports(&ports), ["5000/udp", "80/tcp"]);
        let b = docker_port_bindings(&ports);
        let tcp = b["80/tcp"].as_ref().unwrap();
        assert_eq!(tcp.len(), 2);
        assert_eq!((tcp[0].host_ip.as_deref(), tcp[0].host_port.as_deref()), (Some("127.0.0.1"), Some("8080")));
        assert_eq!(tcp[1].host_ip, None);
        assert_eq!(b["5000/udp"].as_ref().unwrap()[0].host_port.as_deref(), Some("5000"));
    }

    #[test]
    fn only_portmaps_ipv6_check_on_an_ipv4_attachment_is_forgiven() {
        let v4 = json!({"ips": [{"address": "10.89.0.9/24"}]});
        let v6 = json!({"ips": [{"address": "fd00::9/64"}]});
        let err = |plugin: &str, message: &str| cni::Error::Failed {
            plugin: plugin.into(),
            command: "CHECK",
            message: message.into(),
        };
        let bug = err("portmap", "could not check ipv6 dnat: chain CNI-DN-1 not found in iptables table nat");
        assert!(portmap_ipv6_check_bug(&bug, &v4));
        assert!(!portmap_ipv6_check_bug(&bug, &v6));
        assert!(!portmap_ipv6_check_bug(&err("portmap", "could not check ipv4 dnat"), &v4));
        assert!(!portmap_ipv6_check_bug(&err("bridge", "ipv6 missing"), &v4));
    }

    #[test]
    fn the_address_comes_from_the_add_result() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.89.0.9/24", "gateway": "10.89.0.1"}]});
        assert_eq!(address(&r), Some("10.89.0.9".parse().unwrap()));
        assert_eq!(address(&json!({})), None);
    }

    #[test]
    fn a_bridge_spec_joins_the_named_namespace_and_mounts_its_own_etc_files() {
        use super::super::spec::{self, HostFiles, ImageProcess, ResolvedUser, RunSpec};
        let image = ImageProcess { cmd: vec!["sh".into()], ..Default::default() };
        let files = files_in(Path::new("/state/network/containers/web"));
        let run = RunSpec {
            network: crate::base::NetworkMode::Bridge,
            bridge: Some(files.clone()),
            hostname: Some("web".into()),
            ..Default::default()
        };
        let host = HostFiles::under(Path::new("/"));
        let oci = spec::build(&image, &run, ResolvedUser::default(), Path::new("/rootfs"), &host).unwrap();
        let json = serde_json::to_value(&oci).unwrap();
        let net: Vec<&Value> =
            json["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net.len(), 1, "{net:?}");
        assert_eq!(net[0]["path"], json!(files.netns));
        let source = |dest: &str| {
            json["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == dest).map(|m| m["source"].clone())
        };
        assert_eq!(source("/etc/resolv.conf"), Some(json!(files.resolv_conf)), "not the host's resolv.conf");
        assert_eq!(source("/etc/hosts"), Some(json!(files.hosts)));
        assert_eq!(source("/etc/hostname"), Some(json!(files.hostname)));
        assert_eq!(json["hostname"], "web");
        let without = RunSpec { bridge: None, ..run };
        assert!(spec::build(&image, &without, ResolvedUser::default(), Path::new("/rootfs"), &host).is_err());
    }
}
