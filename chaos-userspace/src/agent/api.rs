//! The agent's HTTP API, versioned under `/v1`. Bodies and answers are JSON; the event stream is
//! newline-delimited JSON. Every route but the probes needs `Authorization: Bearer <token>` when
//! the agent has a token.
use std::sync::Arc;

use crate::{
    engine::FaultId,
    error::ChaosError,
    service::events::Following,
    wire::{self, FaultList, Readiness, StoppedAll},
};
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chaos_model::Format;
use futures_util::StreamExt as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio::sync::broadcast::error::RecvError;

use super::shared::{CodeLabel, Shared};

pub fn router(shared: Arc<Shared>, body_limit: usize) -> Router {
    let api = Router::new()
        .route("/v1/faults", get(list).post(create))
        .route("/v1/faults/{id}", get(show).delete(stop))
        .route("/v1/faults:stop-all", post(stop_all))
        .route("/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_token,
        ));
    Router::new()
        .merge(api)
        .merge(probe_routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_requests,
        ))
        .with_state(shared)
}

/// The kubelet's probes, which need no token: served beside the API and on the metrics port.
pub fn probes(shared: Arc<Shared>) -> Router {
    probe_routes().with_state(shared)
}

fn probe_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

/// An answer that is an error: its status and one line naming what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = wire::ApiError {
            error: self.1,
            code: self.0.as_u16(),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<ChaosError> for ApiError {
    fn from(error: ChaosError) -> Self {
        let status = match &error {
            ChaosError::Field(_)
            | ChaosError::Usage(_)
            | ChaosError::InFile { .. }
            | ChaosError::AtLine { .. } => StatusCode::BAD_REQUEST,
            ChaosError::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ChaosError::Capacity { .. } => StatusCode::TOO_MANY_REQUESTS,
            ChaosError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error.to_string())
    }
}

/// Missing or wrong token: 401, and nothing runs. The comparison takes the same time wherever
/// the tokens differ.
async fn require_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &shared.token else {
        return next.run(request).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::as_bytes)
        .unwrap_or_default();
    if bool::from(given.ct_eq(expected)) {
        next.run(request).await
    } else {
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid Authorization: Bearer <token> header is needed".into(),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// `chaos_agent_api_requests_total{code}`.
async fn count_requests(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    shared
        .requests
        .get_or_create(&CodeLabel {
            code: response.status().as_u16().to_string(),
        })
        .inc();
    response
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    Json(Readiness {
        ready: true,
        faults_active: shared.service.active().await,
        max_faults: shared.service.config().max_faults,
    })
    .into_response()
}

/// `POST /v1/faults`: one fault of the model. 201 with the armed fault; 400 naming the field;
/// 422 when the kernel cannot do it (doctor's reason); 429 when the agent is full.
async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "the body is not UTF-8".into()))?;
    let mut fault = chaos_model::parse_fault(text, Format::Json).map_err(ChaosError::Field)?;
    // The agent's event stream reports injections unless a fault turns them off
    // (`"events": {"perCpuPerSec": 0}`).
    fault
        .events
        .get_or_insert_with(chaos_model::Events::default);
    let view = shared.service.create(fault).await?;
    shared.refresh_active().await;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(FaultList {
        faults: shared.service.list().await,
    })
    .into_response()
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fault_id(&id)?;
    let view = shared
        .service
        .view(id)
        .await
        .ok_or(ChaosError::NotFound(id))?;
    Ok(Json(view).into_response())
}

async fn stop(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fault_id(&id)?;
    let view = shared.service.stop(id, "stopped").await?;
    shared.refresh_active().await;
    Ok(Json(view).into_response())
}

/// The kill switch: every fault stops, each object's switch flipped first.
async fn stop_all(State(shared): State<Arc<Shared>>) -> Response {
    let stopped = shared.service.stop_all("stopped").await;
    shared.refresh_active().await;
    Json(StoppedAll { stopped }).into_response()
}

/// Ids are numbers; anything else is no fault (never an index into anything unchecked).
fn fault_id(text: &str) -> Result<FaultId, ApiError> {
    text.parse().map_err(|_| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("fault {text:?}: no such fault (ids are numbers)"),
        )
    })
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Keep the stream open for new events (default); `false` answers with the backlog only.
    follow: Option<bool>,
}

/// `GET /v1/events`: the recent events, then (unless `follow=false`) every new one as it
/// happens, one JSON object per line. A reader too slow to keep up is told how many it missed.
async fn events(State(shared): State<Arc<Shared>>, Query(query): Query<EventsQuery>) -> Response {
    let Following { recent, live } = shared.service.events();
    let ndjson = [(header::CONTENT_TYPE, "application/x-ndjson")];
    let line = |event: &wire::Event| {
        Ok::<_, std::io::Error>(format!(
            "{}\n",
            serde_json::to_string(event).unwrap_or_default()
        ))
    };
    let past = futures_util::stream::iter(recent).map(move |published| line(&published.event));
    if query.follow == Some(false) {
        return (ndjson, Body::from_stream(past)).into_response();
    }
    let future = futures_util::stream::unfold(live, move |mut live| async move {
        let sent = match live.recv().await {
            Ok(published) => line(&published.event),
            Err(RecvError::Lagged(missed)) => line(&wire::Event::Lagged { missed }),
            Err(RecvError::Closed) => return None,
        };
        Some((sent, live))
    });
    (ndjson, Body::from_stream(past.chain(future))).into_response()
}

/// The router in-process (tower's `oneshot`): authentication, typed answers, and refusals that
/// need no kernel. What arms a fault is tested against the real binary (tests/tests/agent.rs).
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use tower::ServiceExt as _;

    use super::*;
    use crate::{engine::EngineConfig, service::FaultService, wire::ApiError as ErrorBody};

    const TOKEN: &str = "s3cret";

    fn app(body_limit: usize) -> Router {
        let service = FaultService::new(
            EngineConfig {
                max_duration: Duration::from_secs(60),
                max_faults: 4,
                history: 16,
            },
            None,
        );
        let shared = Shared::new(service, Some(TOKEN.as_bytes().to_vec()));
        router(Arc::new(shared), body_limit)
    }

    /// One request; the status and the body.
    fn call(app: Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> (u16, Bytes) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request
                .body(Body::from(body.to_string()))
                .expect("a request");
            let response = app.oneshot(request).await.expect("an answer");
            let status = response.status().as_u16();
            let body = to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("a body");
            (status, body)
        })
    }

    fn error_of(body: &Bytes) -> ErrorBody {
        serde_json::from_slice(body).expect("an error body")
    }

    #[test]
    fn every_fault_route_needs_the_token_and_the_probes_do_not() {
        for (method, uri) in [
            ("GET", "/v1/faults"),
            ("POST", "/v1/faults"),
            ("GET", "/v1/faults/1"),
            ("DELETE", "/v1/faults/1"),
            ("POST", "/v1/faults:stop-all"),
            ("GET", "/v1/events"),
        ] {
            for token in [None, Some("wrong")] {
                let (status, body) = call(app(1024), method, uri, token, "{}");
                assert_eq!(status, 401, "{method} {uri} with {token:?}");
                assert_eq!(error_of(&body).code, 401);
            }
        }
        assert_eq!(call(app(1024), "GET", "/healthz", None, "").0, 200);
        let (status, body) = call(app(1024), "GET", "/readyz", None, "");
        assert_eq!(status, 200);
        let ready: Readiness = serde_json::from_slice(&body).expect("readiness");
        assert_eq!((ready.faults_active, ready.max_faults), (0, 4));
    }

    #[test]
    fn answers_are_the_wire_types() {
        let (status, body) = call(app(1024), "GET", "/v1/faults", Some(TOKEN), "");
        assert_eq!(status, 200);
        let list: FaultList = serde_json::from_slice(&body).expect("a fault list");
        assert!(list.faults.is_empty());
        let (status, body) = call(app(1024), "POST", "/v1/faults:stop-all", Some(TOKEN), "");
        assert_eq!(status, 200);
        let stopped: StoppedAll = serde_json::from_slice(&body).expect("stopped");
        assert_eq!(stopped.stopped, 0);
        let (status, body) = call(app(1024), "GET", "/v1/events?follow=false", Some(TOKEN), "");
        assert_eq!((status, body.len()), (200, 0));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let (status, body) = call(
            app(1024),
            "POST",
            "/v1/faults",
            Some(TOKEN),
            r#"{"kind": "explode", "scope": {"cgroup": "/x"}}"#,
        );
        assert_eq!(status, 400);
        let error = error_of(&body);
        assert!(error.error.starts_with("kind: "), "{}", error.error);
        assert!(error.error.contains("accepted: "), "{}", error.error);
        let (status, body) = call(app(1024), "POST", "/v1/faults", Some(TOKEN), "\u{ff}\u{fe}");
        assert_eq!((status, error_of(&body).code), (400, 400));
        for id in ["abc", "99"] {
            let (status, body) = call(
                app(1024),
                "GET",
                &format!("/v1/faults/{id}"),
                Some(TOKEN),
                "",
            );
            assert_eq!(status, 404, "{id}");
            assert!(error_of(&body).error.contains("no such fault"), "{id}");
        }
        let (status, _) = call(app(64), "POST", "/v1/faults", Some(TOKEN), &"x".repeat(100));
        assert_eq!(status, 413);
    }
}
