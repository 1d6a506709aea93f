//! The PoC v1 routes of the backend layer (`/api/v1/pow/init`, `init/validate`,
//! `phase/*`, `validate`; `init/generate` with a v1 body is routed here from
//! [`super::pow`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::{App, detail, parse};

fn v1_reply(r: Result<Value, crate::v1::V1Error>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(crate::v1::V1Error(code, msg)) => detail(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            msg,
        ),
    }
}

pub(super) async fn v1_init_generate(st: App, body: Bytes) -> Response {
    let b: crate::v1::V1Init = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    // v1 and v2 never run together.
    st.stop_all().await;
    v1_reply(st.v1.init_generate(b).await)
}

/// The v1-only routes.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/pow/init",
            post(|State(s): State<App>, b: Bytes| async move {
                match parse::<crate::v1::V1Init>(&b) {
                    Ok(i) => {
                        s.stop_all().await;
                        v1_reply(s.v1.init(i).await)
                    }
                    Err(r) => r,
                }
            }),
        )
        .route(
            "/api/v1/pow/init/validate",
            post(|State(s): State<App>, b: Bytes| async move {
                match parse::<crate::v1::V1Init>(&b) {
                    Ok(i) => {
                        s.stop_all().await;
                        v1_reply(s.v1.init_validate(Some(i)).await)
                    }
                    Err(r) => r,
                }
            }),
        )
        .route(
            "/api/v1/pow/phase/generate",
            post(|State(s): State<App>| async move { v1_reply(s.v1.phase_generate()) }),
        )
        .route(
            "/api/v1/pow/phase/validate",
            post(|State(s): State<App>| async move { v1_reply(s.v1.init_validate(None).await) }),
        )
        .route(
            "/api/v1/pow/validate",
            post(|State(s): State<App>, b: Bytes| async move {
                match parse::<crate::v1::ProofBatch>(&b) {
                    Ok(batch) => match s.v1.validate(batch).await {
                        Ok(()) => axum::Json(Value::Null).into_response(),
                        Err(crate::v1::V1Error(code, msg)) => detail(
                            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                            msg,
                        ),
                    },
                    Err(r) => r,
                }
            }),
        )
}
