use std::path::{Path, PathBuf};

use super::*;

/// What `pgdbm generate config --name demo` (pgdbm (Python) 0.5.0) writes, verbatim.
/// `tests/project_file.rs` checks the real output of the installed CLI too.
const PYTHON_GENERATED: &str = r#"# pgdbm configuration file
# Generated with pgdbm generate config

[project]
name = "demo"
default_env = "dev"

[database]
migrations_table = "schema_migrations"

# Environment configurations
[environments.dev]
host = "localhost"
port = 5432
database = "demo_dev"
user = "postgres"
# password = "secret"  # Can also use ${DB_PASSWORD} for env var
schema = "public"

[environments.test]
host = "localhost"
port = 5432
database = "demo_test"
user = "postgres"
schema = "test"

[environments.prod]
# Use environment variable for production
url = "${DATABASE_URL}"
schema = "production"
ssl_enabled = true
ssl_mode = "require"

# Module configurations (if using multi-module setup)
# [modules.users]
# migrations_path = "src/users/migrations"
# schema = "users"
# mode = "dual"  # standalone | library | dual
# depends_on = []

# [modules.billing]
# migrations_path = "src/billing/migrations"
# schema = "billing"
# mode = "library"
# depends_on = ["users"]

# Shared connection pool configuration (for integrated mode)
# [shared_pool]
# min_connections = 10
# max_connections = 100
# modules = ["users", "billing"]
"#;

/// The generated file with its commented-out module and pool sections switched on.
fn uncommented(text: &str) -> String {
    let on = |l: &str| {
        l.starts_with("# [modules.")
            || l.starts_with("# [shared_pool]")
            || (l.starts_with("# ")
                && l[2..]
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')))
    };
    let start = text.find("# Module configurations").unwrap();
    let tail: Vec<&str> = text[start..]
        .lines()
        .map(|l| if on(l) { &l[2..] } else { l })
        .collect();
    format!("{}{}\n", &text[..start], tail.join("\n"))
}

fn path() -> PathBuf {
    PathBuf::from("/srv/app/pgdbm.toml")
}

fn parse(text: &str) -> Result<Project, ProjectError> {
    Project::parse(text, &path())
}

fn err(text: &str) -> (ProjectError, String) {
    let e = parse(text).unwrap_err();
    let s = e.to_string();
    (e, s)
}

fn names<'a>(ms: impl IntoIterator<Item = &'a ModuleConfig>) -> Vec<&'a str> {
    ms.into_iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn reads_the_file_python_generates() {
    let p = parse(PYTHON_GENERATED).unwrap();
    let info = p.project.as_ref().unwrap();
    assert_eq!((info.name.as_str(), p.default_env()), ("demo", "dev"));
    assert_eq!(p.migrations_table, "schema_migrations");
    let envs: Vec<&str> = p.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(envs, ["dev", "test", "prod"], "file order");
    let dev = p.environment("dev").unwrap();
    assert_eq!(
        dev.resolve_url_with(|_| None).unwrap(),
        "postgresql://postgres@localhost:5432/demo_dev"
    );
    let prod = p.environment("prod").unwrap();
    assert_eq!(
        (
            prod.schema.as_str(),
            prod.ssl_enabled,
            prod.ssl_mode.as_deref()
        ),
        ("production", true, Some("require"))
    );
    assert!(p.modules.is_empty() && p.shared_pool.is_none());
    assert_eq!(
        (
            p.default_module.name.as_str(),
            p.default_module.schema.as_deref()
        ),
        ("default", None)
    );
    assert!(p.module_order().unwrap().is_empty());

    let p = parse(&uncommented(PYTHON_GENERATED)).unwrap();
    assert_eq!(names(p.module_order().unwrap()), ["users", "billing"]);
    let billing = p.module("billing").unwrap();
    assert_eq!(billing.mode, ModuleMode::Library);
    assert_eq!(billing.depends_on, ["users"]);
    let dir = billing.migrations.as_ref().unwrap();
    assert_eq!(dir.path, Path::new("/srv/app/src/billing/migrations"));
    assert_eq!(dir.written, "src/billing/migrations");
    let pool = p.shared_pool.as_ref().unwrap();
    assert_eq!((pool.min_connections, pool.max_connections), (10, 100));
    assert_eq!(pool.modules, ["users", "billing"]);
}

#[test]
fn reads_the_legacy_form() {
    let p = parse(
        "schema = \"myservice\"\nmigrations = \"migrations\"\n\n[modules.billing]\nschema = \"billing\"\nmigrations = \"tests/billing_migrations\"\n",
    )
    .unwrap();
    let d = &p.default_module;
    assert_eq!(
        (d.name.as_str(), d.schema.as_deref()),
        ("myservice", Some("myservice"))
    );
    assert_eq!(
        d.migrations.as_ref().unwrap().path,
        Path::new("/srv/app/migrations")
    );
    let b = p.module("billing").unwrap();
    assert_eq!(
        b.migrations.as_ref().unwrap().written,
        "tests/billing_migrations"
    );
    assert_eq!((b.mode, p.project.is_none()), (ModuleMode::Dual, true));
    // Empty schema: bare table names.
    assert_eq!(parse("schema = \"\"").unwrap().default_module.schema, None);
}

#[test]
fn reads_the_mixed_form_one_module_on_both_levels() {
    let p = parse(
        r#"
schema = "myservice"
module = "svc"
[project]
name = "myservice"
[modules.billing]
migrations_path = "billing"
depends_on = ["svc"]
[modules.svc]
migrations_path = "migrations"
mode = "standalone"
"#,
    )
    .unwrap();
    // The top level and [modules.svc] are one module, each filling the other's gaps.
    let d = &p.default_module;
    assert_eq!((d.name.as_str(), d.mode), ("svc", ModuleMode::Standalone));
    assert_eq!(d.migrations.as_ref().unwrap().written, "migrations");
    assert_eq!(
        p.module("svc").unwrap().schema.as_deref(),
        Some("myservice")
    );
    assert_eq!(names(p.module_order().unwrap()), ["svc", "billing"]);
    // With a twin the top-level module is not walked twice.
    assert_eq!(names(p.module_set().unwrap()), ["svc", "billing"]);

    let (_, e) = err("schema = \"a\"\nmodule = \"m\"\n[modules.m]\nschema = \"b\"\n");
    assert!(
        e.contains("line 1: `schema`: the top-level module is `m` and so is [modules.m]"),
        "{e}"
    );
    assert!(e.contains("says schema `a` and the section `b`"), "{e}");
}

#[test]
fn an_unknown_key_names_key_section_file_line_and_choices() {
    let (e, s) = err("schema = \"x\"\nschemas = \"y\"\n");
    assert!(
        matches!(&e, ProjectError::UnknownKey { key, suggestion: Some("schema"), .. } if key == "schemas")
    );
    assert_eq!(
        s,
        "`/srv/app/pgdbm.toml` line 2: unknown key `schemas` in the top level (did you mean `schema`?); the top level takes: schema, migrations, module, project, database, environments, modules, shared_pool, lint"
    );
    let (_, s) = err("[environments.dev]\nhost = \"h\"\nusername = \"u\"\n");
    assert!(
        s.contains("line 3: unknown key `username` in [environments.dev]"),
        "{s}"
    );
    let (_, s) = err("[shared_pool]\nmax = 3\n");
    assert!(
        s.contains(
            "in [shared_pool]; [shared_pool] takes: min_connections, max_connections, modules"
        ),
        "{s}"
    );
    let (_, s) = err("[project]\nname = \"p\"\nenv = \"dev\"\n");
    assert!(s.contains("unknown key `env` in [project]"), "{s}");
}

#[test]
fn a_misspelled_module_key_is_refused_with_a_suggestion() {
    let (e, s) = err("[modules.billing]\nschema = \"billing\"\nmigration_path = \"m\"\n");
    let ProjectError::UnknownKey {
        at,
        section,
        suggestion,
        accepted,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (at.line, section.as_str(), *suggestion),
        (Some(3), "[modules.billing]", Some("migrations_path"))
    );
    assert!(accepted.contains(&"depends_on"));
    assert!(
        s.contains(
            "[modules.billing] takes: migrations_path, migrations, schema, mode, depends_on"
        ),
        "{s}"
    );
    let (_, s) = err("[modules.billing]\nschema_name = \"billing\"\n");
    assert!(s.contains("did you mean `schema`?"), "{s}");
}

#[test]
fn migrations_is_an_alias_of_migrations_path() {
    let p = parse("[modules.a]\nmigrations = \"m\"\n[modules.b]\nmigrations_path = \"m\"\nmigrations = \"m\"\n").unwrap();
    assert_eq!(
        p.module("a").unwrap().migrations,
        p.module("b").unwrap().migrations
    );
    let (e, s) = err("[modules.a]\nmigrations_path = \"x\"\nmigrations = \"y\"\n");
    assert!(matches!(e, ProjectError::Invalid { .. }));
    assert!(
        s.contains("line 3: `modules.a.migrations`: migrations_path is `x` but migrations is `y`"),
        "{s}"
    );
}

#[test]
fn bad_values_are_refused() {
    let (_, s) = err("[modules.a]\nmode = \"shared\"\n");
    assert!(
        s.contains(
            "`modules.a.mode`: unknown mode `shared`; the modes are: standalone, library, dual"
        ),
        "{s}"
    );
    let (_, s) = err("[modules.a]\nschema = \"bad-name\"\n");
    assert!(
        s.contains("line 2: `modules.a.schema`: invalid schema name `bad-name`"),
        "{s}"
    );
    let (_, s) = err("schema = \"9lives\"\n");
    assert!(
        s.contains("`schema`: invalid schema name `9lives`: it must start with a letter"),
        "{s}"
    );
    let (_, s) = err("[database]\nmigrations_table = \"public.history\"\n");
    assert!(
        s.contains("invalid migrations table name `public.history`"),
        "{s}"
    );
    let (e, s) = err("[environments.dev]\nport = \"5432\"\n");
    assert!(
        matches!(
            e,
            ProjectError::WrongType {
                expected: "an integer",
                found: "a string",
                ..
            }
        ),
        "{s}"
    );
    assert!(
        s.contains("`environments.dev.port` must be an integer, not a string"),
        "{s}"
    );
    let (_, s) = err("[environments.dev]\nport = 70000\n");
    assert!(s.contains("out of range"), "{s}");
    let (_, s) = err("[modules.a]\ndepends_on = \"b\"\n");
    assert!(
        s.contains("must be an array of strings, not a string"),
        "{s}"
    );
    let (_, s) = err("[project]\ndefault_env = \"dev\"\n");
    assert!(s.contains("[project] needs a name"), "{s}");
    let (_, s) = err("[shared_pool]\nmin_connections = 20\nmax_connections = 5\n");
    assert!(s.contains("at least min_connections (20)"), "{s}");
    let (e, s) = err("schema = \n");
    assert!(
        matches!(e, ProjectError::Syntax { .. }) && s.contains("line 1"),
        "{s}"
    );
}

#[test]
fn a_dependency_must_be_declared() {
    let (e, s) = err("schema = \"svc\"\n[modules.billing]\ndepends_on = [\"users\", \"svc\"]\n");
    let ProjectError::UnknownModule { at, dependency, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((at.line, dependency.as_str()), (Some(3), "users"));
    assert!(s.contains("`modules.billing.depends_on` names module `users`, which has no [modules.users] section; declared modules: billing"), "{s}");
    let (_, s) = err("[modules.a]\n[shared_pool]\nmodules = [\"a\", \"b\"]\n");
    assert!(s.contains("`shared_pool.modules` names module `b`"), "{s}");
}

#[test]
fn modules_run_after_their_dependencies_like_python_orders_them() {
    let p = parse(
        r#"
[modules.web]
depends_on = ["billing", "users"]
[modules.billing]
depends_on = ["users"]
[modules.users]
[modules.audit]
[modules.zeta]
[modules.alpha]
"#,
    )
    .unwrap();
    // File order, each module preceded by its dependencies: not alphabetical.
    assert_eq!(
        names(p.module_order().unwrap()),
        ["users", "billing", "web", "audit", "zeta", "alpha"]
    );
}

#[test]
fn a_cycle_is_named() {
    let (e, s) = err(
        "[modules.a]\ndepends_on = [\"b\"]\n[modules.b]\ndepends_on = [\"c\"]\n[modules.c]\ndepends_on = [\"b\"]\n",
    );
    let ProjectError::Cycle { cycle, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(cycle, &["b", "c", "b"]);
    assert!(
        s.contains("in a cycle: b → c → b; remove one of these depends_on entries"),
        "{s}"
    );
    let (_, s) = err("[modules.a]\ndepends_on = [\"a\"]\n");
    assert!(s.contains("cycle: a → a"), "{s}");
}

#[test]
fn urls_expand_variables_like_python() {
    let p = parse(
        r#"
[environments.prod]
url = "${DATABASE_URL}"
[environments.cs]
connection_string = "${PG}"
[environments.literal]
url = "postgresql://db/${NOT_EXPANDED}"
[environments.parts]
host = "db"
port = 6432
database = "my db"
user = "me@corp"
password = "p:ss/w@rd"
[environments.nothing]
host = "db"
"#,
    )
    .unwrap();
    let vars = |name: &str| (name == "DATABASE_URL").then(|| "postgresql://x/y".to_string());
    let url = |env: &str| p.environment(env).unwrap().resolve_url_with(vars);
    assert_eq!(url("prod").unwrap(), "postgresql://x/y");
    assert_eq!(url("literal").unwrap(), "postgresql://db/${NOT_EXPANDED}");
    assert_eq!(
        url("parts").unwrap(),
        "postgresql://me%40corp:p%3Ass%2Fw%40rd@db:6432/my%20db"
    );
    let e = url("cs").unwrap_err();
    assert!(
        matches!(&e, ProjectError::UnsetVariable { variable, key: "connection_string", .. } if variable == "PG")
    );
    assert!(
        e.to_string()
            .contains("the environment variable PG is not set"),
        "{e}"
    );
    assert!(matches!(
        url("nothing").unwrap_err(),
        ProjectError::NoConnection { .. }
    ));
    let e = p.environment("staging").unwrap_err().to_string();
    assert!(
        e.contains("no [environments.staging]") && e.contains("prod, cs, literal, parts, nothing"),
        "{e}"
    );
}

#[test]
fn debug_masks_passwords() {
    let p = parse(
        r#"
[environments.a]
url = "postgresql://me:s3cret@db:5432/app?sslmode=require"
password = "hunter2"
[environments.b]
connection_string = "host=db password='two words' user=me"
[environments.c]
url = "postgresql://db/app?user=me&password=qwerty&x=1"
"#,
    )
    .unwrap();
    let d = format!("{p:?}");
    for secret in ["s3cret", "hunter2", "two words", "qwerty"] {
        assert!(!d.contains(secret), "{secret} in {d}");
    }
    assert!(
        d.contains("postgresql://me:****@db:5432/app?sslmode=require"),
        "{d}"
    );
    assert!(
        d.contains("password=**** user=me") && d.contains("password=****&x=1"),
        "{d}"
    );
    assert!(d.contains("password: Some(\"****\")"), "{d}");
}

#[test]
fn finds_the_file_up_to_the_workspace_root() {
    let root = std::env::temp_dir().join(format!("pgdbm-project-find-{}", std::process::id()));
    let krate = root.join("ws/crates/app");
    std::fs::create_dir_all(&krate).unwrap();
    std::fs::write(root.join("ws/Cargo.toml"), "[workspace]\n").unwrap();
    std::fs::write(root.join(FILE_NAME), "").unwrap();
    assert_eq!(Project::find(&krate), None, "not above the workspace root");
    std::fs::write(root.join("ws").join(FILE_NAME), "").unwrap();
    assert_eq!(Project::find(&krate), Some(root.join("ws").join(FILE_NAME)));
    std::fs::write(krate.join(FILE_NAME), "").unwrap();
    assert_eq!(Project::find(&krate), Some(krate.join(FILE_NAME)));
    let e = Project::load(&root.join("missing.toml")).unwrap_err();
    assert!(matches!(e, ProjectError::Read { .. }));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_module_set_holds_the_top_level_module_with_or_without_a_twin() {
    // Top level only: one module, named after its schema.
    let p = parse("schema = \"shop\"\nmigrations = \"migrations\"\n").unwrap();
    assert_eq!(names(p.module_set().unwrap()), ["shop"]);
    assert!(p.module_order().unwrap().is_empty());
    // Top level beside a section: the top level first, then the sections in their order.
    let p = parse(
        r#"
schema = "shop"
migrations = "migrations"
[modules.audit]
migrations_path = "audit"
depends_on = ["billing"]
[modules.billing]
migrations_path = "billing"
"#,
    )
    .unwrap();
    assert_eq!(names(p.module_set().unwrap()), ["shop", "billing", "audit"]);
    // A top level without migrations is not a module to migrate.
    let p = parse("schema = \"shop\"\n[modules.billing]\nmigrations_path = \"b\"\n").unwrap();
    assert_eq!(names(p.module_set().unwrap()), ["billing"]);
    // Sections only.
    let p = parse("[modules.a]\nmigrations_path = \"a\"\n").unwrap();
    assert_eq!(names(p.module_set().unwrap()), ["a"]);
}
