//! Health hysteresis of one server (pure): consecutive passes and failures
//! against the configured thresholds.
//!
//! A server known at start counts its first result at once (one pass:
//! healthy, one failure: unhealthy); a server added later is unproven and
//! needs `healthy_threshold` passes. `record_*` returns whether the state
//! flipped, so the caller publishes a new snapshot only on a change.

/// The health of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    /// The first result decides at once (servers present at start).
    first_counts: bool,
    passes: u32,
    failures: u32,
}

impl HealthState {
    /// A server present at start: healthy until its first check says
    /// otherwise, and that first result counts at once.
    pub fn at_start() -> HealthState {
        HealthState {
            healthy: true,
            first_counts: true,
            passes: 0,
            failures: 0,
        }
    }

    /// A server added by a reload: no traffic until it passes
    /// `healthy_threshold` checks.
    pub fn unproven() -> HealthState {
        HealthState {
            healthy: false,
            first_counts: false,
            passes: 0,
            failures: 0,
        }
    }

    /// Whether the server takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// A passed check. Returns true when the server became healthy.
    pub fn record_success(&mut self, healthy_threshold: u32) -> bool {
        self.failures = 0;
        self.passes = self.passes.saturating_add(1);
        let first = std::mem::take(&mut self.first_counts);
        if !self.healthy && (first || self.passes >= healthy_threshold) {
            self.healthy = true;
            return true;
        }
        false
    }

    /// A failed check. Returns true when the server became unhealthy.
    pub fn record_failure(&mut self, unhealthy_threshold: u32) -> bool {
        self.passes = 0;
        self.failures = self.failures.saturating_add(1);
        let first = std::mem::take(&mut self.first_counts);
        if self.healthy && (first || self.failures >= unhealthy_threshold) {
            self.healthy = false;
            return true;
        }
        false
    }

    /// A connection to the server failed while serving a request: down at
    /// once, back after `healthy_threshold` passes. Returns true on a flip.
    pub fn mark_down(&mut self) -> bool {
        self.passes = 0;
        self.first_counts = false;
        std::mem::replace(&mut self.healthy, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_at_start_counts_at_once() {
        let mut s = HealthState::at_start();
        assert!(s.record_failure(3));
        assert!(!s.is_healthy());
        let mut s = HealthState::at_start();
        assert!(!s.record_success(2), "already healthy: no flip");
        assert!(s.is_healthy());
    }

    #[test]
    fn unproven_server_needs_threshold_passes() {
        let mut s = HealthState::unproven();
        assert!(!s.is_healthy());
        assert!(!s.record_success(2));
        assert!(s.record_success(2));
        assert!(s.is_healthy());
    }

    #[test]
    fn hysteresis_never_flaps_below_thresholds() {
        let mut s = HealthState::unproven();
        s.record_success(1);
        // Alternating results never reach 3 consecutive failures.
        for _ in 0..10 {
            assert!(!s.record_failure(3));
            assert!(!s.record_failure(3));
            assert!(!s.record_success(2));
            assert!(s.is_healthy());
        }
        assert!(!s.record_failure(3));
        assert!(!s.record_failure(3));
        assert!(s.record_failure(3));
        assert!(!s.record_success(2));
        assert!(s.record_success(2));
    }

    #[test]
    fn passive_mark_down_needs_threshold_to_return() {
        let mut s = HealthState::at_start();
        assert!(s.mark_down());
        assert!(!s.mark_down());
        assert!(!s.record_success(2));
        assert!(s.record_success(2));
    }
}
