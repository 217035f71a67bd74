//! Linux capability names as documents and the policy write them: `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN`.

/// The canonical `CAP_...` spelling of `name` (trimmed, upper case, `CAP_` added when missing). Whether it names
/// a real capability is the runtime spec's to say.
pub fn capability_key(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_gives_the_cap_name() {
        for s in ["NET_ADMIN", "net_admin", " CAP_NET_ADMIN ", "cap_net_admin"] {
            assert_eq!(capability_key(s), "CAP_NET_ADMIN", "{s}");
        }
    }
}
