use std::collections::HashMap;
use std::time::Duration;

use pgdbm::config::SslMode;
use pgdbm::{Database, DatabaseConfig, Error};

use crate::common::TestDb;

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn from_lookup_reads_every_variable() {
    let c = DatabaseConfig::from_lookup(lookup(&[
        ("DATABASE_URL", "postgresql://app@db.internal:6543/orders"),
        ("DB_PASSWORD", "hunter2"),
        ("DB_SCHEMA", "orders"),
        ("DB_MIN_CONN", "3"),
        ("DB_MAX_CONN", "7"),
        ("DB_SSL_MODE", "require"),
        ("DB_STATEMENT_TIMEOUT_MS", "1500"),
    ]))
    .unwrap();
    assert_eq!(c.get_schema(), Some("orders"));
    assert_eq!(c.target(), "db.internal:6543/orders");
    assert_eq!(c.get_ssl_mode().unwrap(), SslMode::Require);
    let dbg = format!("{c:?}");
    assert!(dbg.contains("min_connections: 3"), "{dbg}");
    assert!(dbg.contains("max_connections: 7"), "{dbg}");
    assert!(dbg.contains("statement_timeout: Some(1.5s)"), "{dbg}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn from_lookup_without_url_uses_parts() {
    let c = DatabaseConfig::from_lookup(lookup(&[
        ("DB_HOST", "10.1.2.3"),
        ("DB_PORT", "5433"),
        ("DB_NAME", "svc"),
    ]))
    .unwrap();
    assert_eq!(c.target(), "10.1.2.3:5433/svc");
}

#[test]
fn malformed_env_values_name_the_variable() {
    for (var, value) in [
        ("DB_MIN_CONN", "five"),
        ("DB_MAX_CONN", "-1"),
        ("DB_PORT", "99999"),
        ("DB_SSL_MODE", "sometimes"),
        ("DB_STATEMENT_TIMEOUT_MS", "1s"),
    ] {
        let err = DatabaseConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
        match &err {
            Error::Config { field, message } => {
                assert_eq!(field, var, "{err}");
                assert!(message.contains(value), "{err}");
            }
            other => panic!("{var}: expected Config error, got {other:?}"),
        }
    }
    let err = DatabaseConfig::from_lookup(lookup(&[("DB_SCHEMA", "my-service")])).unwrap_err();
    assert!(matches!(err, Error::Identifier(_)), "{err:?}");
    assert!(
        err.to_string().contains("invalid schema name `my-service`"),
        "{err}"
    );
}

#[test]
fn env_file_is_read_without_touching_the_process_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(
        &path,
        "# service settings\nDATABASE_URL=postgresql://svc@localhost:5432/fromfile\nDB_SCHEMA=filesvc\nDB_MAX_CONN=9\n",
    )
    .unwrap();
    let c = DatabaseConfig::from_env_file(&path).unwrap();
    if std::env::var("DATABASE_URL").is_err() {
        assert_eq!(c.target(), "localhost:5432/fromfile");
    }
    if std::env::var("DB_SCHEMA").is_err() {
        assert_eq!(c.get_schema(), Some("filesvc"));
    }
    assert!(format!("{c:?}").contains("max_connections: 9"));
    assert!(
        std::env::var("DB_SCHEMA")
            .map(|v| v != "filesvc")
            .unwrap_or(true)
    );

    let err = DatabaseConfig::from_env_file(dir.path().join("missing.env")).unwrap_err();
    assert!(err.to_string().contains("missing.env"), "{err}");
}

#[test]
fn tls_modes_parse() {
    for (s, m) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("VERIFY-FULL", SslMode::VerifyFull),
        ("verify_full", SslMode::VerifyFull),
    ] {
        assert_eq!(s.parse::<SslMode>().unwrap(), m);
        assert_eq!(m.to_string().parse::<SslMode>().unwrap(), m);
    }
    let err = "allowish".parse::<SslMode>().unwrap_err();
    assert!(
        err.to_string().contains("unknown TLS mode `allowish`"),
        "{err}"
    );
    // sslmode in the URL is honoured.
    let c = DatabaseConfig::new("postgresql://u@h/db?sslmode=verify-ca");
    assert_eq!(c.get_ssl_mode().unwrap(), SslMode::VerifyCa);
    assert_eq!(
        DatabaseConfig::new("postgresql://u@h/db")
            .get_ssl_mode()
            .unwrap(),
        SslMode::Prefer
    );
}

#[test]
fn invalid_values_fail_validation_with_the_field_name() {
    let base = || DatabaseConfig::new("postgresql://u@localhost/db");
    let cases: Vec<(DatabaseConfig, &str)> = vec![
        (
            base().min_connections(10).max_connections(5),
            "min_connections",
        ),
        (base().max_connections(0), "max_connections"),
        (base().acquire_timeout(Duration::ZERO), "acquire_timeout"),
        (base().retry_attempts(0), "retry_attempts"),
        (base().retry_backoff(0.5), "retry_backoff"),
        (base().ssl_ca_file("/nonexistent/ca.pem"), "ssl_ca_file"),
        (
            base().ssl_client_cert("/nonexistent/c.pem", "/nonexistent/k.pem"),
            "ssl_cert_file",
        ),
        (DatabaseConfig::new("mysql://u@localhost/db"), "url"),
        (DatabaseConfig::new("not a url"), "url"),
        (base().server_setting("bad name;", "x"), "server_settings"),
        (base().server_setting("TimeZone", "UTC"), "server_settings"),
    ];
    for (config, expected) in cases {
        match config.validate() {
            Err(Error::Config { field, message }) => {
                assert_eq!(field, expected, "{message}")
            }
            other => panic!("{expected}: expected Config error, got {other:?}"),
        }
    }
    let err = base().schema("9lives").validate().unwrap_err();
    assert!(matches!(err, Error::Identifier(_)));
    let err = base()
        .ssl_ca_file("/nonexistent/ca.pem")
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn password_never_shows() {
    let c = DatabaseConfig::new("postgresql://app:Sup3rS3cret%21@localhost:5432/db");
    let c2 = DatabaseConfig::from_parts("localhost", 5432, "db", "app").password("Sup3rS3cret!");
    for text in [
        format!("{c:?}"),
        c.to_string(),
        format!("{c2:?}"),
        c2.to_string(),
    ] {
        assert!(!text.contains("Sup3rS3cret"), "{text}");
    }
    assert!(c.to_string().contains("****"), "{c}");
}

#[tokio::test]
async fn connect_to_a_dead_port_fails_after_the_attempts_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let config = DatabaseConfig::new("postgresql://app:TopSecretPw@127.0.0.1:1/db")
        .retry_attempts(3)
        .retry_delay(Duration::from_millis(20))
        .connect_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = Database::connect(config).await.unwrap_err();
    match &err {
        Error::Connect(c) => {
            assert_eq!(c.host, "127.0.0.1");
            assert_eq!(c.port, 1);
            assert_eq!(c.attempts, 3);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("after 3 attempt"), "{text}");
    assert!(!text.contains("TopSecretPw"), "{text}");
    // Backoff really happened: 20 ms + 40 ms between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[tokio::test]
async fn wrong_password_fails_at_once_without_echoing_it() {
    // Trust auth accepts any password, so use a database that does not exist instead: a
    // permanent error is not retried.
    let t = TestDb::new().await;
    let mut url = url::Url::parse(&t.url()).unwrap();
    url.set_path("/pgdbm_no_such_database");
    let _ = url.set_password(Some("Pw4Nothing"));
    let config = DatabaseConfig::new(url.to_string())
        .retry_attempts(5)
        .retry_delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let err = Database::connect(config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "retried a permanent error"
    );
    let text = format!("{err} {err:?}");
    assert!(
        matches!(&err, Error::Connect(c) if c.attempts == 1),
        "{text}"
    );
    assert!(text.contains("pgdbm_no_such_database"), "{text}");
    assert!(!text.contains("Pw4Nothing"), "{text}");
}

#[tokio::test]
async fn session_settings_are_applied_to_every_connection() {
    let t = TestDb::new().await;
    let db = Database::connect(
        t.config()
            .schema("svc")
            .statement_timeout(Some(Duration::from_millis(1234)))
            .lock_timeout(None)
            .application_name("pgdbm-it")
            .server_setting("work_mem", "7MB")
            .init_command("SET TIME ZONE 'Asia/Tokyo'"),
    )
    .await
    .unwrap();
    let row: (String, String, String, String, String) = db
        .fetch_one(
            "SELECT current_setting('statement_timeout'), current_setting('search_path'), \
             current_setting('application_name'), current_setting('TimeZone'), current_setting('work_mem')",
            (),
        )
        .await
        .unwrap();
    assert_eq!(row.0, "1234ms");
    assert_eq!(row.1, "\"svc\", public");
    assert_eq!(row.2, "pgdbm-it");
    assert_eq!(row.3, "Asia/Tokyo");
    assert_eq!(row.4, "7MB");
    let lock: String = db
        .fetch_value("SELECT current_setting('lock_timeout')", ())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock, "0", "lock_timeout(None) leaves the server default");
    db.close().await;
}

#[tokio::test]
async fn a_bad_init_command_fails_connect() {
    let t = TestDb::new().await;
    let err = Database::connect(t.config().init_command("SELEC 1"))
        .await
        .unwrap_err();
    let q = err.as_query_error().expect("query error");
    assert_eq!(q.sql(), "SELEC 1");
    assert_eq!(q.code(), Some("42601"));
}

#[test]
fn tls_defaults_to_off_for_a_local_server_only() {
    let mode = |url: &str| DatabaseConfig::new(url).get_ssl_mode().unwrap();
    assert_eq!(mode("postgresql://u@127.0.0.1/db"), SslMode::Disable);
    assert_eq!(mode("postgresql://u@localhost/db"), SslMode::Disable);
    assert_eq!(mode("postgresql://u@[::1]/db"), SslMode::Disable);
    assert_eq!(mode("postgresql://u@db.internal/db"), SslMode::Prefer);
    assert_eq!(
        mode("postgresql://u@127.0.0.1/db?sslmode=require"),
        SslMode::Require
    );
    assert_eq!(
        DatabaseConfig::new("postgresql://u@127.0.0.1/db")
            .ssl_mode(SslMode::Prefer)
            .get_ssl_mode()
            .unwrap(),
        SslMode::Prefer
    );
}

#[test]
fn deserializes_from_any_serde_format_and_rejects_unknown_keys() {
    let c: DatabaseConfig = serde_json::from_str(
        r#"{
            "url": "postgresql://app:pw123@db.internal:6543/orders",
            "schema": "orders",
            "min_connections": 2,
            "max_connections": 9,
            "statement_timeout_ms": 1500,
            "lock_timeout_ms": 0,
            "ssl_mode": "verify-full",
            "server_settings": {"work_mem": "8MB"},
            "init_commands": ["SET TIME ZONE 'UTC'"]
        }"#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.get_schema(), Some("orders"));
    assert_eq!(c.get_ssl_mode().unwrap(), SslMode::VerifyFull);
    let dbg = format!("{c:?}");
    assert!(
        dbg.contains("max_connections: 9") && dbg.contains("lock_timeout: None"),
        "{dbg}"
    );
    assert!(!dbg.contains("pw123"), "{dbg}");

    // pgdbm ignored misspelled keys; here they are errors that name the key.
    let err = serde_json::from_str::<DatabaseConfig>(r#"{"schema_name": "x"}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `schema_name`"),
        "{err}"
    );
    let err = serde_json::from_str::<DatabaseConfig>(r#"{"ssl_mode": "sometimes"}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown TLS mode `sometimes`"),
        "{err}"
    );
}
