//! Device and group ids.

/// Whether `id` is a valid device or group id: `[A-Za-z0-9_-]{1,64}`. Ids become MQTT topic levels, so this
/// also keeps `+`, `#` and `/` out of topics.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
