//! The agent's HTTP API, versioned under `/v1`. Bodies and answers are JSON; the event stream is
//! newline-delimited JSON. Every route but the probes needs `Authorization: Bearer <token>` when
//! the agent has a token.
use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chaos::{engine::FaultId, error::ChaosError, inject, workload::PodNames};
use chaos_model::Format;
use futures_util::StreamExt as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio::sync::broadcast::error::RecvError;

use super::{CodeLabel, Shared};

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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_requests,
        ))
        .with_state(shared)
}

/// An answer that is an error: its status and one line naming what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1, "code": self.0.as_u16() });
        (self.0, Json(body)).into_response()
    }
}

impl From<ChaosError> for ApiError {
    fn from(error: ChaosError) -> Self {
        let status = match &error {
            ChaosError::Field(_)
            | ChaosError::Input { .. }
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
    let engine = shared.engine.lock().await;
    let body = serde_json::json!({
        "ready": true,
        "faults_active": engine.active(),
        "max_faults": engine.config().max_faults,
    });
    Json(body).into_response()
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
    let pods = PodNames::for_faults(shared.names.as_ref(), [&fault].into_iter()).await?;
    // Planning probes the kernel and resolves scopes: blocking work, off the async workers.
    let plan = tokio::task::spawn_blocking(move || inject::plan(&fault, pods.as_deref()))
        .await
        .map_err(|err| ApiError(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    let mut engine = shared.engine.lock().await;
    // Loading and verifying is blocking work: the other worker keeps serving the probes, the
    // scrapes and the event streams meanwhile.
    let ids = tokio::task::block_in_place(|| engine.arm(vec![plan], None))?;
    shared.refresh_active(&engine);
    let view = ids
        .first()
        .and_then(|id| engine.view(*id))
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "armed nothing".into()))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    let engine = shared.engine.lock().await;
    Json(serde_json::json!({ "faults": engine.list() })).into_response()
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fault_id(&id)?;
    let engine = shared.engine.lock().await;
    let view = engine.view(id).ok_or(ChaosError::NotFound(id))?;
    Ok(Json(view).into_response())
}

async fn stop(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = fault_id(&id)?;
    let mut engine = shared.engine.lock().await;
    let view = engine.stop(id, "stopped").await?;
    shared.refresh_active(&engine);
    Ok(Json(view).into_response())
}

/// The kill switch: every fault stops, each object's switch flipped first.
async fn stop_all(State(shared): State<Arc<Shared>>) -> Response {
    let mut engine = shared.engine.lock().await;
    let stopped = engine.stop_all("stopped").await;
    shared.refresh_active(&engine);
    Json(serde_json::json!({ "stopped": stopped })).into_response()
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
    let live = shared.events.live.subscribe();
    let backlog = shared.events.backlog();
    let ndjson = [(header::CONTENT_TYPE, "application/x-ndjson")];
    let past = futures_util::stream::iter(backlog)
        .map(|line| Ok::<_, std::io::Error>(format!("{line}\n")));
    if query.follow == Some(false) {
        return (ndjson, Body::from_stream(past)).into_response();
    }
    let future = futures_util::stream::unfold(live, |mut live| async move {
        let line = match live.recv().await {
            Ok(line) => format!("{line}\n"),
            Err(RecvError::Lagged(missed)) => {
                format!(
                    "{}\n",
                    serde_json::json!({ "type": "lagged", "missed": missed })
                )
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(line), live))
    });
    (ndjson, Body::from_stream(past.chain(future))).into_response()
}
