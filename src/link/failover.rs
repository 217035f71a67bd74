//! Broker failover: the brokers a client may use (`mqtt.urls`, `--broker A,B`) and which one it connects to next.
//! Pure bookkeeping over connection options, shared by the agent's link, the controller commands and the
//! exporter, so all of them follow one rule: start with the first broker; stay on the broker that answers; after
//! a lost connection or a failed attempt, try the next one in list order (after the last comes the first again),
//! each attempt after the caller's usual backoff. It does no IO and never decides the delay.

use std::time::Duration;

use rumqttc::MqttOptions;

/// First reconnect delay of the controller commands and the exporter (the agent's default `reconnect_min_ms`).
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Cap on their reconnect delay (the agent's default `reconnect_max_ms`).
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The brokers of one client, in the configured order, and the one in use.
#[derive(Debug, Clone)]
pub struct Brokers {
    /// The URL (for logs and errors) and connection options of each broker.
    list: Vec<(String, MqttOptions)>,
    current: usize,
}

impl Brokers {
    /// The brokers (URL, options) in the order they are tried; `None` for an empty list.
    pub fn new(list: Vec<(String, MqttOptions)>) -> Option<Brokers> {
        (!list.is_empty()).then_some(Brokers { list, current: 0 })
    }

    /// The options of the broker to connect to now.
    pub fn current(&self) -> &MqttOptions {
        &self.list[self.current].1
    }

    /// The URL of the current broker.
    pub fn label(&self) -> &str {
        &self.list[self.current].0
    }

    /// Moves to the next broker in list order (wrapping) after a lost connection or a failed attempt, and
    /// returns its options. With one broker it stays on it.
    pub(crate) fn advance(&mut self) -> &MqttOptions {
        self.current = (self.current + 1) % self.list.len();
        self.current()
    }

    /// How many brokers there are.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// Whether there is more than one broker to fail over to.
    pub(crate) fn has_failover(&self) -> bool {
        self.list.len() > 1
    }

    /// Applies `f` to every broker's options (e.g. the last will, which every connection must carry).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut MqttOptions)) {
        self.list.iter_mut().for_each(|(_, o)| f(o));
    }

    /// The URL of every broker, comma-separated (for errors and logs).
    pub fn labels(&self) -> String {
        self.list.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ports: &[u16]) -> Brokers {
        Brokers::new(
            ports.iter().map(|p| (format!("mqtt://127.0.0.1:{p}"), MqttOptions::new("c", "127.0.0.1", *p))).collect(),
        )
        .unwrap()
    }

    #[test]
    fn failover_goes_down_the_list_and_wraps_to_the_first() {
        let mut b = brokers(&[1883, 1884, 1885]);
        assert_eq!(b.label(), "mqtt://127.0.0.1:1883", "the first broker is tried first");
        assert!(b.has_failover());
        let order: Vec<u16> = (0..5).map(|_| b.advance().broker_address().1).collect();
        assert_eq!(order, [1884, 1885, 1883, 1884, 1885]);
        assert_eq!(b.label(), "mqtt://127.0.0.1:1885");
        assert_eq!(b.labels(), "mqtt://127.0.0.1:1883, mqtt://127.0.0.1:1884, mqtt://127.0.0.1:1885");
    }

    #[test]
    fn one_broker_is_retried_itself_and_an_empty_list_is_refused() {
        let mut b = brokers(&[1883]);
        assert!(!b.has_failover());
        assert_eq!(b.advance().broker_address().1, 1883);
        assert_eq!(b.count(), 1);
        assert!(Brokers::new(Vec::new()).is_none());
    }

    #[test]
    fn settings_applied_to_all_reach_every_broker() {
        let mut b = brokers(&[1883, 1884]);
        b.for_each_mut(|o| {
            o.set_keep_alive(std::time::Duration::from_secs(7));
        });
        assert_eq!(b.current().keep_alive().as_secs(), 7);
        assert_eq!(b.advance().keep_alive().as_secs(), 7);
    }
}
