//! `GET /metrics` for every server of the system: one [`prometheus_client`] registry per
//! server, encoded as OpenMetrics text. Counters are registered without their `_total`
//! suffix (the encoder adds it), so a counter `poc_nonces` is scraped as
//! `poc_nonces_total`, and help texts without their final full stop (the encoder adds
//! it).

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
pub use prometheus_client;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

/// The OpenMetrics content type.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's samples as OpenMetrics text, then `extra` (another exporter's
/// OpenMetrics text, e.g. the consensus engine's, its own `# EOF` dropped), then `# EOF`.
pub fn encode(registry: &Registry, extra: &str) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut out, registry);
    let extra = extra.trim_end();
    let extra = extra.strip_suffix("# EOF").unwrap_or(extra).trim_end();
    if !extra.is_empty() {
        out.push_str(extra);
        out.push('\n');
    }
    let _ = encode_eof(&mut out);
    out
}

/// The `/metrics` response for a registry (see [`encode`]).
pub fn response(registry: &Registry, extra: &str) -> Response {
    (
        [(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
        encode(registry, extra),
    )
        .into_response()
}

/// A counter's registry name: `name` without a trailing `_total` (the encoder adds it).
pub fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;

    #[test]
    fn one_exposition_with_the_extra_text_before_a_single_eof() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        c.inc_by(3);
        r.register(counter_name("poc_things_total"), "Things", c);
        let g: Gauge = Gauge::default();
        g.set(7);
        r.register("poc_level", "Level", g);
        let text = encode(&r, "# TYPE engine_x counter\nengine_x_total 1\n# EOF\n");
        assert!(
            text.contains(
                "# HELP poc_things Things.\n# TYPE poc_things counter\npoc_things_total 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("poc_level 7\n"), "{text}");
        assert!(text.contains("engine_x_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }
}
