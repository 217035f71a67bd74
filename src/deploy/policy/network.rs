//! The policy keys of bridge networking: `allow_bridge_network` for `network = "bridge"` and
//! `allowed_host_ports` for what `ports` makes the host listen on.

use crate::base::NetworkMode;
use crate::config::PolicyConfig;
use crate::deploy::document::Deployment;

/// Reports through `bad(field, message)` each way `d`'s network asks for more than `policy` allows.
pub(super) fn check(d: &Deployment, policy: &PolicyConfig, bad: &mut impl FnMut(String, String)) {
    if d.network == NetworkMode::Bridge && !policy.allow_bridge_network {
        let what = "the agent's bridge network (network = \"bridge\": outbound access through the host)";
        bad("network".into(), super::refusal(what, "policy.allow_bridge_network = true"));
    }
    let ranges: Vec<(u16, u16)> =
        policy.allowed_host_ports.iter().filter_map(|r| crate::base::ports::parse_range(r).ok()).collect();
    for (i, spec) in d.ports.iter().enumerate() {
        // Entries that do not parse are validation's to report.
        let Ok(p) = spec.parse::<crate::base::PortMapping>() else { continue };
        if !ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p.host_port)) {
            let allowed = if policy.allowed_host_ports.is_empty() {
                "none".to_owned()
            } else {
                policy.allowed_host_ports.join(", ")
            };
            let what = format!("publishing host port {} (`{spec}`; allowed: {allowed})", p.host_port);
            let key = format!("policy.allowed_host_ports to include {}", p.host_port);
            bad(format!("ports[{i}]"), super::refusal(&what, &key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(network: &str, ports: &[&str]) -> Deployment {
        let ports: Vec<String> = ports.iter().map(|p| format!("\"{p}\"")).collect();
        let doc = format!(
            "[deployments.web]\nimage = \"nginx:1\"\nnetwork = \"{network}\"\nports = [{}]\n",
            ports.join(", ")
        );
        let doc =
            crate::deploy::document::parse(doc.as_bytes(), Some(crate::deploy::document::Format::Toml), "t").unwrap();
        doc.deployments["web"].clone()
    }

    fn refusals(d: &Deployment, policy: &PolicyConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check(d, policy, &mut |f, m| out.push((f, m)));
        out
    }

    #[test]
    fn unprivileged_ports_are_allowed_by_default_and_low_ones_refused_naming_the_key() {
        let policy = PolicyConfig::default();
        assert_eq!(refusals(&deployment("bridge", &["8080:80", "127.0.0.1:5000:5000/udp"]), &policy), []);
        let r = refusals(&deployment("bridge", &["8080:80", "80:80"]), &policy);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, "ports[1]");
        assert!(r[0].1.contains("policy.allowed_host_ports") && r[0].1.contains("port 80"), "{}", r[0].1);
        let open = PolicyConfig { allowed_host_ports: vec!["80".into(), "1024-65535".into()], ..Default::default() };
        assert_eq!(refusals(&deployment("bridge", &["80:80"]), &open), []);
    }

    #[test]
    fn a_strict_policy_refuses_the_bridge_and_every_port() {
        let strict = PolicyConfig { allow_bridge_network: false, allowed_host_ports: vec![], ..Default::default() };
        let r = refusals(&deployment("bridge", &["8080:80"]), &strict);
        let fields: Vec<&str> = r.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["network", "ports[0]"]);
        assert!(r[0].1.contains("policy.allow_bridge_network = true"), "{}", r[0].1);
        assert!(r[1].1.contains("allowed: none"), "{}", r[1].1);
    }

    #[test]
    fn documents_with_bad_ports_are_refused_by_validation_with_the_field_path() {
        let doc = "[deployments.web]\nimage = \"nginx:1\"\nnetwork = \"bridge\"\nports = [\"8080:80\", \"80\", \"8080:81\"]\n\
                   [deployments.host]\nimage = \"nginx:1\"\nports = [\"9000:9000\"]\n";
        let err = crate::deploy::document::parse(doc.as_bytes(), Some(crate::deploy::document::Format::Toml), "t")
            .unwrap_err();
        let crate::deploy::document::Error::Invalid { problems, .. } = err else { panic!("{err}") };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["deployments.host.ports[0]", "deployments.web.ports[1]", "deployments.web.ports[2]"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("network = \"bridge\""), "{}", problems[0].message);
        let ok = crate::deploy::document::parse(
            b"[deployments.web]\nimage = \"nginx:1\"\nnetwork = \"bridge\"\nports = [\"8080:80\"]\n",
            Some(crate::deploy::document::Format::Toml),
            "t",
        )
        .unwrap();
        let config = ok.deployments["web"].container_config("web", "nginx@sha256:00").unwrap();
        assert_eq!((config.network, config.ports.len()), (NetworkMode::Bridge, 1));
        assert_eq!(config.ports[0].to_string(), "8080:80/tcp");
    }
}
