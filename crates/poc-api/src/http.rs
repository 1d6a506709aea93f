//! What both HTTP servers share: the JSON error answer, the callback-token check, and
//! the wall clock signed proof requests are stamped with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ApiNode;
use crate::callbacks::{CallbackRefusal, Grant};
use crate::metrics::Count;

/// A JSON error answer: `{"error": msg}` with `code`.
pub(crate) fn reply(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({"error": msg.into()}))).into_response()
}

/// What a callback token grants, taken apart by `pick` when it is of the kind the route
/// serves; otherwise (unknown token, or a token for something else) the 403 to answer.
#[allow(clippy::result_large_err)]
pub(crate) fn grant_for<T>(
    st: &ApiNode,
    token: &str,
    pick: impl FnOnce(&Grant) -> Option<T>,
) -> Result<T, Response> {
    let grant = st.tokens.grant(token).map_err(|e| refused(st, e))?;
    pick(&grant).ok_or_else(|| refused(st, CallbackRefusal::WrongUse(grant.to_string())))
}

/// The answer to a refused callback.
pub(crate) fn refused(st: &ApiNode, e: CallbackRefusal) -> Response {
    st.metrics.add(Count::CallbacksRefused, 1);
    tracing::warn!("callback refused: {e}");
    reply(StatusCode::FORBIDDEN, e.to_string())
}

/// Nanoseconds since the Unix epoch (the timestamp of signed proof requests).
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
