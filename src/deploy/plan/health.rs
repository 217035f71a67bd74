//! The health gate of one container as a pure state machine: which verdict a run of probe results gives. The
//! executor's checker only probes, sleeps and feeds each result in with the time since checking began.

use std::time::Duration;

use super::Health;
use crate::deploy::document::HealthCheck;

/// What the checker does after a probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to report: probe again after the interval.
    Wait,
    /// Report this health and keep probing.
    Report(Health),
    /// Report this health and stop: the gate decided for good.
    Final(Health),
}

/// Counts probe results for one container: `Healthy` on the first success, `Unhealthy` (final) after
/// `retries` consecutive failures outside the start period; failures inside it do not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gate {
    retries: u32,
    start_period: Duration,
    failures: u32,
    healthy: bool,
}

impl Gate {
    /// The gate of `check` (a `running_for` check needs none: it is healthy once the time has passed).
    pub fn new(check: &HealthCheck) -> Self {
        Self { retries: check.retries.max(1), start_period: check.start_period.0, failures: 0, healthy: false }
    }

    /// Takes one probe result, `elapsed` after checking began.
    pub(crate) fn observe(&mut self, result: Result<(), String>, elapsed: Duration) -> Verdict {
        match result {
            Ok(()) => {
                self.failures = 0;
                if self.healthy {
                    return Verdict::Wait;
                }
                self.healthy = true;
                Verdict::Report(Health::Healthy)
            }
            Err(_) if elapsed < self.start_period => Verdict::Wait,
            Err(reason) => {
                self.failures += 1;
                if self.failures < self.retries {
                    return Verdict::Wait;
                }
                let failures = self.failures;
                Verdict::Final(Health::Unhealthy { reason: format!("{reason} ({failures} probes in a row)") })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::document::DurationSpec;

    fn gate(retries: u32, start_period_s: u64) -> Gate {
        Gate::new(&HealthCheck {
            retries,
            start_period: DurationSpec(Duration::from_secs(start_period_s)),
            ..Default::default()
        })
    }

    const T: Duration = Duration::from_secs(100);

    fn no(reason: &str) -> Result<(), String> {
        Err(reason.to_owned())
    }

    #[test]
    fn the_first_success_reports_healthy_once() {
        let mut g = gate(3, 0);
        assert_eq!(g.observe(Ok(()), T), Verdict::Report(Health::Healthy));
        assert_eq!(g.observe(Ok(()), T), Verdict::Wait);
    }

    #[test]
    fn retries_failures_in_a_row_are_final_and_a_success_resets_the_count() {
        let mut g = gate(2, 0);
        assert_eq!(g.observe(no("refused"), T), Verdict::Wait);
        assert_eq!(g.observe(Ok(()), T), Verdict::Report(Health::Healthy));
        assert_eq!(g.observe(no("refused"), T), Verdict::Wait, "the success reset the count");
        assert_eq!(
            g.observe(no("refused"), T),
            Verdict::Final(Health::Unhealthy { reason: "refused (2 probes in a row)".into() })
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut g = gate(1, 30);
        assert_eq!(g.observe(no("starting"), Duration::from_secs(29)), Verdict::Wait);
        assert!(matches!(g.observe(no("down"), Duration::from_secs(30)), Verdict::Final(Health::Unhealthy { .. })));
    }

    #[test]
    fn zero_retries_means_one() {
        let mut g = gate(0, 0);
        assert!(matches!(g.observe(no("down"), T), Verdict::Final(_)));
    }
}
