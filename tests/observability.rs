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
    let out = captured.text();
    assert!(
        out.contains("pgdbm.query")
            && out.contains("db.statement=INSERT INTO \"obs\".t VALUES (1), (2)"),
        "{out}"
    );
    assert!(
        out.contains("db.schema=\"obs\"") || out.contains("db.schema=obs"),
        "{out}"
    );
    assert!(out.contains("rows=2"), "{out}");
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
