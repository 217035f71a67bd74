//! Which filters the link subscribes to after each connect, and how it survives a message larger than its
//! packet limit. Pure: no IO, the caller passes the time.
//!
//! MQTT 3.1.1 gives a client no way to refuse one message: a packet over the limit can only end the connection,
//! and a retained one comes back with the next SUBSCRIBE, so without care every reconnect dies the same way (one
//! such message on a group topic would do that to the whole group). So: after a connection ended on an
//! oversized packet, the next connection subscribes one filter at a time, each SUBSCRIBE sent only after the
//! previous SUBACK. Brokers send a subscription's retained messages right after its SUBACK (Mosquitto queues them
//! while handling the SUBSCRIBE), so an oversized packet then belongs to the filter acknowledged last. That
//! filter is left out ("poisoned") and retried after a backoff (30 s doubling to 10 min) with a SUBSCRIBE of its
//! own on the live connection; if it still brings the oversized message, the connection ends once more and the
//! backoff grows. The agent reports each refusal (topic, size, limit, retry time) in `reported`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// First wait before a poisoned filter is subscribed again; doubles per strike up to [`POISON_MAX`].
pub(crate) const POISON_MIN: Duration = Duration::from_secs(30);
/// Longest wait before a poisoned filter is subscribed again.
pub(crate) const POISON_MAX: Duration = Duration::from_secs(600);
/// How long after its SUBACK a filter is still blamed for an oversized packet (its retained messages follow the
/// SUBACK at once; an oversized live message later is not pinned on it).
const SUSPECT_WINDOW: Duration = Duration::from_secs(5);

/// A filter left out because its retained message is larger than the link's packet limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Poisoned {
    /// Size of the packet that ended the connection.
    pub bytes: usize,
    /// Times in a row it did.
    pub strikes: u32,
    /// When it is subscribed again.
    pub retry_at: Instant,
}

/// What the link learns when it blames a filter for an oversized packet: reported to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub filter: String,
    pub bytes: usize,
    pub retry_in: Duration,
}

/// The subscription plan of one link.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    filters: Vec<String>,
    poisoned: BTreeMap<String, Poisoned>,
    /// Subscribe one filter at a time on the next connection (an oversized packet was not pinned on a filter).
    probe: bool,
    /// Filters still to subscribe, one SUBSCRIBE each, after the one in flight.
    queue: VecDeque<String>,
    /// The filter whose SUBSCRIBE was sent alone and is not acknowledged yet.
    in_flight: Option<String>,
    /// The filter acknowledged last when subscribing one at a time, until this instant, with its strikes.
    suspect: Option<(String, Instant, u32)>,
}

impl Subscriptions {
    pub fn new(filters: Vec<String>) -> Self {
        Subscriptions {
            filters,
            poisoned: BTreeMap::new(),
            probe: false,
            queue: VecDeque::new(),
            in_flight: None,
            suspect: None,
        }
    }

    /// A connection was accepted: the filters of the first SUBSCRIBE (all healthy ones together, or only the
    /// first when subscribing one at a time). Empty: nothing to subscribe.
    pub fn connected(&mut self, now: Instant) -> Vec<String> {
        self.queue.clear();
        self.in_flight = None;
        self.suspect = None;
        let due = |p: &Poisoned| p.retry_at <= now;
        let any_due = self.poisoned.values().any(due);
        let active: Vec<String> =
            self.filters.iter().filter(|f| self.poisoned.get(*f).is_none_or(due)).cloned().collect();
        if !(self.probe || any_due) {
            return active;
        }
        self.queue = active.into();
        self.next_single()
    }

    fn next_single(&mut self) -> Vec<String> {
        self.in_flight = self.queue.pop_front();
        self.in_flight.iter().cloned().collect()
    }

    /// A SUBACK arrived: the filters of the next SUBSCRIBE (empty: none).
    pub(crate) fn acked(&mut self, now: Instant) -> Vec<String> {
        let Some(filter) = self.in_flight.take() else { return Vec::new() };
        // Subscribed again after a strike: healed unless its retained message still breaks the connection.
        let strikes = self.poisoned.remove(&filter).map_or(0, |p| p.strikes);
        self.suspect = Some((filter, now + SUSPECT_WINDOW, strikes));
        if self.queue.is_empty() {
            self.probe = false;
        }
        self.next_single()
    }

    /// The connection ended on a packet of `bytes` over the limit: the filter it is pinned on, if any. Without
    /// one, the next connection subscribes one filter at a time to find it.
    pub(crate) fn oversized(&mut self, bytes: usize, now: Instant) -> Option<Refusal> {
        let culprit = match (self.in_flight.take(), self.suspect.take()) {
            // Sent alone and not acknowledged yet: a broker may send retained messages before the SUBACK.
            (Some(f), _) => Some((f.clone(), self.poisoned.get(&f).map_or(0, |p| p.strikes))),
            (None, Some((f, until, strikes))) if now <= until => Some((f, strikes)),
            _ => None,
        };
        self.queue.clear();
        let Some((filter, strikes)) = culprit else {
            self.probe = true;
            return None;
        };
        let strikes = strikes + 1;
        let retry_in = POISON_MIN.saturating_mul(1 << (strikes - 1).min(10)).min(POISON_MAX);
        self.poisoned.insert(filter.clone(), Poisoned { bytes, strikes, retry_at: now + retry_in });
        self.probe = false;
        Some(Refusal { filter, bytes, retry_in })
    }

    /// The connection ended for another reason: what was in flight is forgotten (resubscribed on connect).
    pub(crate) fn disconnected(&mut self) {
        self.queue.clear();
        self.in_flight = None;
        self.suspect = None;
    }

    /// When the next poisoned filter is due to be subscribed again.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.poisoned.values().map(|p| p.retry_at).min()
    }

    /// When the link should look for a due retry: the next retry time, unless a single SUBSCRIBE is still
    /// under way (then its SUBACK comes first).
    pub(crate) fn retry_timer(&self) -> Option<Instant> {
        if self.in_flight.is_some() || !self.queue.is_empty() {
            return None;
        }
        self.next_retry()
    }

    /// On a live connection: a poisoned filter whose retry is due, to subscribe alone now (none while another
    /// single SUBSCRIBE is in flight).
    pub(crate) fn due(&mut self, now: Instant) -> Option<String> {
        if self.in_flight.is_some() || !self.queue.is_empty() {
            return None;
        }
        let filter = self.poisoned.iter().find(|(_, p)| p.retry_at <= now).map(|(f, _)| f.clone())?;
        self.in_flight = Some(filter.clone());
        Some(filter)
    }

    /// The filters left out now.
    #[cfg(test)]
    pub(crate) fn poisoned(&self) -> &BTreeMap<String, Poisoned> {
        &self.poisoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Subscriptions {
        Subscriptions::new(vec!["dev/desired".into(), "dev/cmd/#".into(), "groups/lab/desired".into()])
    }

    #[test]
    fn all_filters_go_in_one_subscribe_until_a_packet_is_oversized() {
        let mut s = subs();
        let t = Instant::now();
        assert_eq!(s.connected(t).len(), 3);
        assert_eq!(s.acked(t), Vec::<String>::new(), "a batch SUBACK starts nothing");
        // Oversized after a batch: nobody to blame, probe next time.
        assert_eq!(s.oversized(5 << 20, t), None);
        assert_eq!(s.connected(t), ["dev/desired"]);
        assert_eq!(s.acked(t), ["dev/cmd/#"]);
        assert_eq!(s.acked(t), ["groups/lab/desired"]);
        // The group's retained message follows its SUBACK.
        let r = s.oversized(5 << 20, t + Duration::from_millis(10)).unwrap();
        assert_eq!((r.filter.as_str(), r.bytes, r.retry_in), ("groups/lab/desired", 5 << 20, POISON_MIN));
        // Next connection: the healthy filters together, the poisoned one left out.
        assert_eq!(s.connected(t + Duration::from_secs(1)), ["dev/desired", "dev/cmd/#"]);
        assert_eq!(s.next_retry(), Some(t + Duration::from_millis(10) + POISON_MIN));
    }

    #[test]
    fn a_poisoned_filter_is_retried_alone_with_a_growing_backoff_and_heals() {
        let mut s = subs();
        let t = Instant::now();
        s.oversized(1, t);
        s.connected(t);
        s.acked(t);
        s.acked(t);
        s.acked(t);
        assert!(s.oversized(9, t).is_some());
        assert_eq!(s.connected(t).len(), 2);
        assert_eq!(s.acked(t), Vec::<String>::new());
        assert_eq!(s.due(t + Duration::from_secs(29)), None);
        let at = t + POISON_MIN;
        assert_eq!(s.due(at).as_deref(), Some("groups/lab/desired"));
        // Retained message still too large: strike two, twice the wait.
        let r = s.oversized(9, at).unwrap();
        assert_eq!(r.retry_in, POISON_MIN * 2);
        assert_eq!(s.poisoned()["groups/lab/desired"].strikes, 2);
        // After a reconnect the due filter is probed alone; this time its SUBACK passes quietly.
        let later = at + POISON_MIN * 2;
        assert_eq!(s.connected(later), ["dev/desired"], "a due retry makes the connection subscribe one at a time");
        s.acked(later);
        assert_eq!(s.acked(later), ["groups/lab/desired"]);
        assert_eq!(s.acked(later), Vec::<String>::new());
        assert!(s.poisoned().is_empty(), "healed");
        // An oversized live message long after the SUBACK is not pinned on it.
        assert_eq!(s.oversized(9, later + Duration::from_secs(60)), None);
    }

    #[test]
    fn the_backoff_is_capped_and_other_errors_forget_what_was_in_flight() {
        let mut s = Subscriptions::new(vec!["a".into()]);
        let mut now = Instant::now();
        assert_eq!(s.oversized(1, now), None);
        let mut last = Duration::ZERO;
        for _ in 0..12 {
            assert_eq!(s.connected(now), ["a"]);
            let r = s.oversized(1, now).expect("a filter sent alone is the culprit");
            last = r.retry_in;
            now += r.retry_in;
        }
        assert_eq!(last, POISON_MAX);
        assert_eq!(s.poisoned()["a"].strikes, 12);
        assert_eq!(s.connected(now), ["a"]);
        s.disconnected();
        assert_eq!(s.oversized(1, now), None, "nothing in flight after a disconnect");
    }
}
