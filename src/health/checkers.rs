//! The running checker tasks, one per server with active checks, kept in
//! step with the config: a new config stops the tasks of servers it no
//! longer has (or checks differently) and starts the ones it adds, and
//! leaves the others running on their own rhythm, so a change that touches
//! one container does not delay every other server's next check.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{spawn_checker, targets, HealthReport, Target};
use crate::config::Config;

/// The checker tasks of one control plane.
#[derive(Debug, Default)]
pub struct Checkers {
    tasks: HashMap<Target, JoinHandle<()>>,
}

impl Checkers {
    /// Starts a task for every server of `config` with active checks, each
    /// first checking one interval from now (the first round is done by
    /// [`super::first_round`]).
    pub fn start(config: &Config, tx: &mpsc::Sender<HealthReport>) -> Checkers {
        let tasks = targets(config)
            .into_iter()
            .map(|(target, health)| {
                let first = health.interval;
                let task = spawn_checker(target.clone(), health, first, tx.clone());
                (target, task)
            })
            .collect();
        Checkers { tasks }
    }

    /// Brings the tasks in step with `config`: stops those of servers it no
    /// longer checks, starts one for each server new to it, which checks at
    /// once (a server added after the start is unproven until it passes).
    pub fn reconcile(&mut self, config: &Config, tx: &mpsc::Sender<HealthReport>) {
        let wanted = targets(config);
        let mut keep: HashMap<Target, JoinHandle<()>> = HashMap::with_capacity(wanted.len());
        for (target, health) in wanted {
            let task = match self.tasks.remove(&target) {
                Some(task) => task,
                None => spawn_checker(target.clone(), health, Duration::ZERO, tx.clone()),
            };
            keep.insert(target, task);
        }
        self.stop();
        self.tasks = keep;
    }

    /// Stops every task.
    pub fn stop(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }

    /// How many servers are checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no server is checked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop();
    }
}
