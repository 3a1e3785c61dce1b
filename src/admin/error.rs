//! Admin API errors: `{"error": {"code": "...", "message": "..."}}` with a
//! 4xx (or 5xx) status.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

use crate::control::store::StoreError;
use crate::control::ControlError;
use crate::wire::{ErrorAnswer, ErrorBody};

/// An admin request that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`target_unhealthy`, ...).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {path}"),
        )
    }

    /// The JSON response.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = ErrorAnswer {
            error: ErrorBody {
                code: self.code.into(),
                message: self.message.clone(),
                errors: Vec::new(),
            },
        };
        let body = serde_json::to_vec(&body).expect("error answers serialize: plain data");
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let (status, code) = match &e {
            ControlError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            ControlError::TargetUnhealthy { .. } => (StatusCode::CONFLICT, "target_unhealthy"),
            ControlError::VersionMismatch { .. } => (StatusCode::CONFLICT, "version_mismatch"),
            ControlError::NothingToRollBack(_) => (StatusCode::CONFLICT, "nothing_to_roll_back"),
            ControlError::InvalidWeight(_) => (StatusCode::BAD_REQUEST, "invalid_weight"),
            ControlError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
            ControlError::NoConfigFile => (StatusCode::CONFLICT, "no_config_file"),
            ControlError::InvalidTls(_) => (StatusCode::BAD_REQUEST, "invalid_tls"),
            ControlError::NoCanaryStages(_) => (StatusCode::CONFLICT, "no_canary_stages"),
            ControlError::CanaryRunning(_) => (StatusCode::CONFLICT, "canary_running"),
            ControlError::NoCanary(_) => (StatusCode::CONFLICT, "no_canary"),
            ControlError::BadDeploy(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ControlError::NoDocker(_) | ControlError::FileService(_) => {
                (StatusCode::CONFLICT, "no_docker")
            }
            ControlError::DeployBusy(_) => (StatusCode::CONFLICT, "deploy_running"),
            ControlError::NoDeploy(_) => (StatusCode::CONFLICT, "no_deploy"),
            ControlError::Store(StoreError::Conflict { .. }) => (StatusCode::CONFLICT, "conflict"),
            ControlError::Store(StoreError::NotLeader(_)) => (StatusCode::CONFLICT, "not_leader"),
            ControlError::Store(StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable")
            }
            ControlError::Store(StoreError::NotDurable(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "not_persisted")
            }
            ControlError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolName;

    #[test]
    fn control_errors_map_to_the_spec_codes() {
        let e: ApiError = ControlError::TargetUnhealthy {
            service: "a".into(),
            pool: PoolName::Green,
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "target_unhealthy")
        );
        let e: ApiError = ControlError::UnknownService("x".into()).into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "unknown_service")
        );
        let e: ApiError = ControlError::NothingToRollBack("x".into()).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }
}
