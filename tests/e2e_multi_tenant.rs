//! End to end: the `multi_tenant` example as a child process on a free port, against a database
//! of each test's own, spoken to over HTTP; what it wrote is checked in the database itself.

use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use pgdbm::testing::TestDatabase;
use serde_json::{Value, json};
use support::service::Service;

/// `multi_tenant` on a free port, killed when dropped.
struct MultiTenant {
    svc: Service,
    base: String,
    client: reqwest::Client,
}

impl MultiTenant {
    /// Starts the service on `db` and waits until it answers.
    async fn start(db: &TestDatabase) -> MultiTenant {
        let svc = Service::start_example("multi_tenant", &db.url(), &[]).await;
        let base = svc.base.clone();
        MultiTenant {
            svc,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The schemas whose name starts with `tenant` (any case), sorted.
async fn tenant_schemas(db: &TestDatabase) -> Vec<String> {
    let rows: Vec<(String,)> = db
        .fetch_all(
            "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname ILIKE 'tenant%' ORDER BY 1",
            (),
        )
        .await
        .unwrap();
    rows.into_iter().map(|(s,)| s).collect()
}

/// The registry rows (module, name, schema_name), by name; none when there is no registry yet.
async fn registry(db: &TestDatabase) -> Vec<(String, String, String)> {
    if !db.table_exists("pgdbm.tenants").await.unwrap() {
        return Vec::new();
    }
    db.fetch_all(
        "SELECT module, name, schema_name FROM pgdbm.tenants ORDER BY name",
        (),
    )
    .await
    .unwrap()
}

fn row(module: &str, name: &str, schema: &str) -> (String, String, String) {
    (module.into(), name.into(), schema.into())
}

fn has_detail(v: &Value) -> bool {
    v["detail"].as_str().is_some_and(|d| !d.is_empty())
}

#[tokio::test]
async fn every_route_and_status() {
    let db = TestDatabase::new().await.unwrap();
    let svc = MultiTenant::start(&db).await;

    let r = svc.client.get(format!("{}/ping", svc.base)).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "pong");
    assert_eq!(svc.get("/health").await, (200, json!({"status": "ok"})));
    assert_eq!(svc.get("/tenants").await, (200, json!([])));

    // Tenants.
    assert_eq!(
        svc.post("/tenants", &json!({"name": "acme"})).await,
        (201, json!({"name": "acme"}))
    );
    assert_eq!(
        registry(&db).await,
        vec![row("myservice", "acme", "tenant_acme")]
    );
    assert!(db.table_exists("tenant_acme.users").await.unwrap());
    assert!(db.table_exists("tenant_acme.posts").await.unwrap());
    // Its migrations history is in its own schema.
    let history: Option<i64> = db
        .fetch_value("SELECT count(*) FROM tenant_acme.schema_migrations", ())
        .await
        .unwrap();
    assert_eq!(history, Some(3));

    let (status, v) = svc.post("/tenants", &json!({"name": "acme"})).await;
    assert_eq!(status, 409, "{v}");
    assert!(has_detail(&v), "{v}");

    for body in [
        json!({"name": "Bad-Name"}),
        json!({"name": ""}),
        json!({"name": "1acme"}),
        json!({"name": "a".repeat(60)}),
        json!({"name": 42}),
        json!({"nom": "acme"}),
        json!({}),
    ] {
        let (status, v) = svc.post("/tenants", &body).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert!(has_detail(&v), "{body}: {v}");
    }
    assert_eq!(svc.post_raw("/tenants", "{not json").await, 422);
    assert_eq!(svc.get("/tenants").await, (200, json!(["acme"])));

    // Users of the tenant.
    assert_eq!(
        svc.post(
            "/t/acme/users",
            &json!({"email": "alice@example.com", "name": "Alice"})
        )
        .await,
        (201, json!({"id": 1, "email": "alice@example.com"}))
    );
    // The row is really in the database, in the tenant's schema.
    let stored: Option<(String, Option<String>)> = db
        .fetch_optional("SELECT email, name FROM tenant_acme.users WHERE id = 1", ())
        .await
        .unwrap();
    assert_eq!(
        stored,
        Some(("alice@example.com".into(), Some("Alice".into())))
    );

    let (status, v) = svc
        .post(
            "/t/acme/users",
            &json!({"email": "alice@example.com", "name": "Again"}),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(has_detail(&v), "{v}");

    for body in [
        json!({"email": "bob@example.com"}),
        json!({"name": "No Email"}),
        json!({"email": 42, "name": "x"}),
        json!({"email": "not-an-email", "name": "x"}),
    ] {
        let (status, v) = svc.post("/t/acme/users", &body).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert!(has_detail(&v), "{body}: {v}");
    }
    assert_eq!(svc.post_raw("/t/acme/users", "{not json").await, 422);

    assert_eq!(
        svc.post(
            "/t/acme/users",
            &json!({"email": "bob@example.com", "name": "Bob"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        svc.get("/t/acme/users").await,
        (
            200,
            json!([
                {"id": 1, "email": "alice@example.com", "name": "Alice"},
                {"id": 3, "email": "bob@example.com", "name": "Bob"},
            ])
        ),
        "the failed insert of a duplicate used id 2"
    );
    assert_eq!(
        svc.get("/t/acme/users/1").await,
        (
            200,
            json!({"id": 1, "email": "alice@example.com", "name": "Alice"})
        )
    );
    assert_eq!(
        svc.get("/t/acme/users/999").await,
        (404, json!({"detail": "User not found"}))
    );
    let (status, v) = svc.get("/t/acme/users/abc").await;
    assert_eq!(status, 422, "{v}");

    assert_eq!(svc.get("/health").await.0, 200);
    let count: Option<i64> = db
        .fetch_value("SELECT count(*) FROM tenant_acme.users", ())
        .await
        .unwrap();
    assert_eq!(count, Some(2), "failed requests wrote nothing");
    assert_eq!(tenant_schemas(&db).await, vec!["tenant_acme"]);
}

#[tokio::test]
async fn tenants_never_see_each_others_rows() {
    let db = TestDatabase::new().await.unwrap();
    let svc = MultiTenant::start(&db).await;
    for name in ["acme", "globex"] {
        assert_eq!(svc.post("/tenants", &json!({"name": name})).await.0, 201);
    }
    for (email, name) in [
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ] {
        let body = json!({"email": email, "name": name});
        assert_eq!(svc.post("/t/acme/users", &body).await.0, 201, "{body}");
    }
    // The same email in another tenant is no duplicate.
    assert_eq!(
        svc.post(
            "/t/globex/users",
            &json!({"email": "alice@example.com", "name": "Other Alice"})
        )
        .await,
        (201, json!({"id": 1, "email": "alice@example.com"}))
    );
    // But it is within that tenant.
    assert_eq!(
        svc.post(
            "/t/globex/users",
            &json!({"email": "alice@example.com", "name": "Again"})
        )
        .await
        .0,
        409
    );

    assert_eq!(
        svc.get("/t/acme/users").await,
        (
            200,
            json!([
                {"id": 1, "email": "alice@example.com", "name": "Alice"},
                {"id": 2, "email": "bob@example.com", "name": "Bob"},
                {"id": 3, "email": "carol@example.com", "name": "Carol"},
            ])
        )
    );
    assert_eq!(
        svc.get("/t/globex/users").await,
        (
            200,
            json!([{"id": 1, "email": "alice@example.com", "name": "Other Alice"}])
        )
    );
    // By id: each tenant has its own ids, and another tenant's ids are not found.
    assert_eq!(
        svc.get("/t/globex/users/1").await,
        (
            200,
            json!({"id": 1, "email": "alice@example.com", "name": "Other Alice"})
        )
    );
    assert_eq!(
        svc.get("/t/acme/users/1").await,
        (
            200,
            json!({"id": 1, "email": "alice@example.com", "name": "Alice"})
        )
    );
    for id in [2, 3] {
        assert_eq!(
            svc.get(&format!("/t/globex/users/{id}")).await,
            (404, json!({"detail": "User not found"}))
        );
        assert_eq!(svc.get(&format!("/t/acme/users/{id}")).await.0, 200);
    }

    // In the database: each tenant's rows in its own schema, nothing elsewhere.
    let acme: Vec<(i64, String)> = db
        .fetch_all("SELECT id, email FROM tenant_acme.users ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(
        acme,
        vec![
            (1, "alice@example.com".into()),
            (2, "bob@example.com".into()),
            (3, "carol@example.com".into()),
        ]
    );
    let globex: Vec<(i64, String, Option<String>)> = db
        .fetch_all(
            "SELECT id, email, name FROM tenant_globex.users ORDER BY id",
            (),
        )
        .await
        .unwrap();
    assert_eq!(
        globex,
        vec![(1, "alice@example.com".into(), Some("Other Alice".into()))]
    );
    assert!(!db.table_exists("myservice.users").await.unwrap());
    assert!(!db.table_exists("public.users").await.unwrap());
    assert_eq!(svc.get("/tenants").await, (200, json!(["acme", "globex"])));
    assert_eq!(
        registry(&db).await,
        vec![
            row("myservice", "acme", "tenant_acme"),
            row("myservice", "globex", "tenant_globex"),
        ]
    );
}

#[tokio::test]
async fn unknown_tenant_is_404_and_invalid_name_422_and_neither_creates_anything() {
    let db = TestDatabase::new().await.unwrap();
    let svc = MultiTenant::start(&db).await;
    let not_found = json!({"detail": "Tenant not found"});
    let user = json!({"email": "alice@example.com", "name": "Alice"});

    // Before any tenant exists (there is no registry table yet).
    assert_eq!(svc.get("/t/nobody/users").await, (404, not_found.clone()));
    assert_eq!(svc.get("/tenants").await, (200, json!([])));

    assert_eq!(svc.post("/tenants", &json!({"name": "acme"})).await.0, 201);
    for tenant in ["nobody", "acme2", "tenant_acme"] {
        assert_eq!(
            svc.get(&format!("/t/{tenant}/users")).await,
            (404, not_found.clone()),
            "{tenant}"
        );
        assert_eq!(
            svc.get(&format!("/t/{tenant}/users/1")).await,
            (404, not_found.clone()),
            "{tenant}"
        );
        assert_eq!(
            svc.post(&format!("/t/{tenant}/users"), &user).await,
            (404, not_found.clone()),
            "{tenant}"
        );
    }
    for tenant in ["Bad-Name", "bad-name", "ACME", "1acme", "bad%20name"] {
        let (status, v) = svc.get(&format!("/t/{tenant}/users")).await;
        assert_eq!(status, 422, "{tenant}: {v}");
        assert!(has_detail(&v), "{tenant}: {v}");
        let (status, v) = svc.get(&format!("/t/{tenant}/users/1")).await;
        assert_eq!(status, 422, "{tenant}: {v}");
        let (status, v) = svc.post(&format!("/t/{tenant}/users"), &user).await;
        assert_eq!(status, 422, "{tenant}: {v}");
    }
    assert_eq!(
        svc.post("/tenants", &json!({"name": "Bad-Name"})).await.0,
        422
    );

    // Nothing was created for any of them: one schema, one registry row, no users.
    assert_eq!(tenant_schemas(&db).await, vec!["tenant_acme"]);
    assert_eq!(
        registry(&db).await,
        vec![row("myservice", "acme", "tenant_acme")]
    );
    let users: Option<i64> = db
        .fetch_value("SELECT count(*) FROM tenant_acme.users", ())
        .await
        .unwrap();
    assert_eq!(users, Some(0));
    assert_eq!(svc.get("/tenants").await, (200, json!(["acme"])));
}

#[tokio::test]
async fn concurrent_creates_of_one_tenant_make_it_once() {
    let db = TestDatabase::new().await.unwrap();
    let svc = MultiTenant::start(&db).await;
    let body = json!({"name": "initech"});
    let creates = (0..4).map(|_| svc.post("/tenants", &body));
    let mut statuses: Vec<u16> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409]);
    assert_eq!(tenant_schemas(&db).await, vec!["tenant_initech"]);
    assert_eq!(
        registry(&db).await,
        vec![row("myservice", "initech", "tenant_initech")]
    );
    let user = json!({"email": "a@example.com", "name": "A"});
    assert_eq!(svc.post("/t/initech/users", &user).await.0, 201);
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let db = TestDatabase::new().await.unwrap();
    let mut svc = MultiTenant::start(&db).await;
    assert_eq!(svc.post("/tenants", &json!({"name": "acme"})).await.0, 201);
    let status = Command::new("kill")
        .args(["-TERM", &svc.svc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = svc.svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        svc.client
            .get(format!("{}/ping", svc.base))
            .send()
            .await
            .is_err()
    );
}
