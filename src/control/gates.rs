//! The gates of a switch: the target pool must have a healthy server, and
//! every healthy one must report the expected version when one is asked for.

use super::runtime::ServerHealth;
use super::{ControlError, Inner};
use crate::config::{PoolName, ServerAddr};

/// The health and version gates of a switch of `service` to `to`.
pub(super) fn check_target(
    inner: &Inner,
    service: &str,
    to: PoolName,
    expect_version: Option<&str>,
) -> Result<(), ControlError> {
    let servers = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .map(|s| s.pool(to).servers.clone())
        .unwrap_or_default();
    let healthy: Vec<(&ServerAddr, &ServerHealth)> = servers
        .iter()
        .filter_map(|addr| {
            inner
                .health
                .get(&(service.to_string(), to, addr.clone()))
                .map(|h| (addr, h))
        })
        .filter(|(_, h)| h.takes_traffic())
        .collect();
    if healthy.is_empty() {
        return Err(ControlError::TargetUnhealthy {
            service: service.to_string(),
            pool: to,
        });
    }
    if let Some(expected) = expect_version {
        for (addr, h) in healthy {
            if h.version.as_deref() != Some(expected) {
                let found = match &h.version {
                    Some(v) => format!("{addr} reports {v:?}"),
                    None => format!("{addr} reports no version"),
                };
                return Err(ControlError::VersionMismatch {
                    service: service.to_string(),
                    pool: to,
                    expected: expected.to_string(),
                    found,
                });
            }
        }
    }
    Ok(())
}
