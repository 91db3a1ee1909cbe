use std::time::Duration;

use pgdbm::Database;
use tracing_subscriber::fmt::format::FmtSpan;

#[path = "integration/common.rs"]
#[allow(dead_code)] // shared with the main integration suite
mod common;
mod support;
use common::TestDb;
use support::captured::Captured;

// A test binary of its own, with the global subscriber: tracing caches per-callsite interest
// process-wide, which makes thread-local subscribers unreliable beside other tests.
#[tokio::test]
async fn spans_carry_the_statement_and_slow_queries_warn() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let t = TestDb::new().await;
    let db = Database::connect(
        t.config()
            .schema("obs")
            .slow_query_threshold(Some(Duration::from_millis(30))),
    )
    .await
    .unwrap();
    db.execute("CREATE TABLE {{tables.t}} (id int)", ())
        .await
        .unwrap();
    db.execute("INSERT INTO {{tables.t}} VALUES (1), (2)", ())
        .await
        .unwrap();
    db.fetch_value::<String, _>("SELECT pg_sleep(0.06)::text", ())
        .await
        .unwrap();
    let err = db.execute("SELECT * FROM {{tables.missing}}", ()).await;
    assert!(err.is_err());
    let out = captured.text();
    let insert = out
        .lines()
        .find(|l| l.contains("pgdbm.query") && l.contains("db.statement=\"INSERT"))
        .unwrap_or_else(|| panic!("no span closed for the INSERT: {out}"));
    // OpenTelemetry's database conventions, so tracing-opentelemetry exports them as they are.
    let port = url::Url::parse(&t.url()).unwrap().port().unwrap_or(5432);
    for field in [
        "otel.name=INSERT ".to_string(),
        "otel.kind=\"client\"".to_string(),
        "db.system=\"postgresql\"".to_string(),
        "db.system.name=\"postgresql\"".to_string(),
        format!("db.namespace={}.obs", t.name),
        "db.operation=\"INSERT\"".to_string(),
        "db.operation.name=\"INSERT\"".to_string(),
        "db.statement=\"INSERT INTO \\\"obs\\\".t VALUES (1), (2)\"".to_string(),
        "db.query.text=\"INSERT INTO \\\"obs\\\".t VALUES (1), (2)\"".to_string(),
        format!("server.port={port}"),
        "server.address=".to_string(),
        "db.response.returned_rows=2".to_string(),
    ] {
        assert!(insert.contains(&field), "{field} missing in {insert}");
    }
    assert!(!insert.contains("otel.status_code"), "{insert}");
    let failed = out
        .lines()
        .find(|l| {
            l.contains("pgdbm.query")
                && l.contains("db.statement=\"SELECT * FROM \\\"obs\\\".missing")
        })
        .unwrap_or_else(|| panic!("no span closed for the failing SELECT: {out}"));
    for field in [
        "otel.status_code=\"ERROR\"",
        "error.type=\"database\"",
        "db.response.status_code=\"42P01\"",
    ] {
        assert!(failed.contains(field), "{field} missing in {failed}");
    }
    let slow: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("pgdbm: slow query"))
        .collect();
    assert_eq!(slow.len(), 1, "{out}");
    assert!(
        slow[0].contains("WARN") && slow[0].contains("pg_sleep"),
        "{}",
        slow[0]
    );
}
