//! Changes: the bodies of switch and weights requests, the answer to any
//! change, and the error answer.

use serde::{Deserialize, Serialize};

use super::ServiceStatus;
use crate::config::PoolName;

/// `POST /api/v1/services/{svc}/switch`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// Target pool; default: the standby pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PoolName>,
    /// Refuse unless every healthy target server reports this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_version: Option<String>,
    /// Skip the health and version gates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `PUT /api/v1/services/{svc}/weights`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRequest {
    /// Percent of new requests to the standby pool. Required; a number
    /// outside 0..=100 is refused with `invalid_weight`.
    #[serde(default)]
    pub standby: Option<i64>,
}

/// The answer to a change (switch, rollback, weights, canary, reload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The generation the change produced (the current one when nothing changed).
    pub generation: u64,
    /// Whether anything changed.
    pub changed: bool,
    /// The service after the change (none for a reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceStatus>,
    /// Whether the new state reached the release-state store (the state
    /// file).
    #[serde(default = "yes")]
    pub persisted: bool,
}

fn yes() -> bool {
    true
}

/// Every refusal: `{"error": {"code": "...", "message": "..."}}` with a 4xx
/// or 5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The `error` member of an [`ErrorAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code (`target_unhealthy`, ...).
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Itemized problems, one line each (a refused reload's config errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_request_serializes_only_what_is_set_and_refuses_unknown_fields() {
        let req = SwitchRequest {
            to: Some(PoolName::Green),
            ..SwitchRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"to": "green"})
        );
        assert!(serde_json::from_str::<SwitchRequest>(r#"{"too": "green"}"#).is_err());
    }

    #[test]
    fn an_error_answer_without_errors_has_no_errors_member() {
        let e = ErrorAnswer {
            error: ErrorBody {
                code: "no_canary".into(),
                message: "no canary of service agent is running".into(),
                errors: Vec::new(),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["error"].get("errors").is_none());
        assert_eq!(serde_json::from_value::<ErrorAnswer>(v).unwrap(), e);
    }
}
