//! One `pgdbm.toml` for pgdbm (Python) and pgdbm (Rust): pgdbm 0.5.0's own `load_config` reads
//! our files, we read the file its CLI writes, and both see the same modules, in the same order,
//! and the same connection URLs. No database. Needs pgdbm (Python) 0.5.0, which the test support
//! installs under `target/test-tools/` when the machine has none (`support/tools.rs`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use pgdbm::project::Project;
use serde_json::Value;

/// What pgdbm (Python) makes of a file: its module order and the values we compare.
const PYTHON_VIEW: &str = r#"
import json, sys
from pathlib import Path
from pgdbm.cli.config import load_config, resolve_module_order
c = load_config(Path(sys.argv[1]))
def url(e):
    try:
        return e.get_connection_string()
    except ValueError:
        return None
print(json.dumps({
    "order": resolve_module_order(c),
    "project": c.project.name if c.project else None,
    "migrations_table": c.database.migrations_table if c.database else None,
    "modules": [[n, m.migrations_path, m.schema_name, m.mode, m.depends_on]
                for n, m in c.modules.items()],
    "environments": [[n, url(e), e.schema_name] for n, e in c.environments.items()],
    "shared_pool": c.shared_pool.modules if c.shared_pool else None,
}))
"#;

/// The value `DATABASE_URL` has for both sides (Python expands `${DATABASE_URL}` when loading).
const DATABASE_URL: &str = "postgresql://deploy@db.internal:5432/prod";

fn python(args: &[&str], dir: &Path) -> String {
    const NEEDS: &str =
        "this test needs python3 with pgdbm (Python) 0.5.0: pip install 'pgdbm[cli]==0.5.0'";
    let out = Command::new(support::tools::pgdbm_python())
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", DATABASE_URL)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {NEEDS}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!("{NEEDS}\n{stderr}");
    }
    assert!(out.status.success(), "python3 {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn require_pgdbm_0_5_0() {
    let version = python(
        &["-c", "import pgdbm; print(pgdbm.__version__)"],
        Path::new("."),
    );
    assert_eq!(
        version.trim(),
        "0.5.0",
        "these tests compare with pgdbm (Python) 0.5.0: pip install 'pgdbm[cli]==0.5.0'"
    );
}

/// Python and we read `file` alike; returns the module order.
fn both_read_alike(file: &Path) -> Vec<String> {
    require_pgdbm_0_5_0();
    let dir = file.parent().unwrap();
    let py: Value = serde_json::from_str(&python(
        &["-c", PYTHON_VIEW, &file.display().to_string()],
        dir,
    ))
    .unwrap();
    let ours = Project::load(file).unwrap_or_else(|e| panic!("{e}"));
    let what = file.display();

    let order: Vec<String> = ours
        .module_order()
        .unwrap()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(
        py["order"],
        serde_json::json!(order),
        "module order of {what}"
    );

    let modules: Vec<Value> = ours
        .modules
        .iter()
        .map(|m| {
            serde_json::json!([
                m.name,
                m.migrations.as_ref().map(|d| &d.written),
                m.schema,
                m.mode.as_str(),
                m.depends_on,
            ])
        })
        .collect();
    assert_eq!(py["modules"], Value::from(modules), "modules of {what}");

    let environments: Vec<Value> = ours
        .environments
        .iter()
        .map(|e| {
            let url = e
                .resolve_url_with(|v| (v == "DATABASE_URL").then(|| DATABASE_URL.to_string()))
                .ok();
            serde_json::json!([e.name, url, e.schema])
        })
        .collect();
    assert_eq!(
        py["environments"],
        Value::from(environments),
        "environments of {what}"
    );

    assert_eq!(
        py["project"],
        serde_json::json!(ours.project.as_ref().map(|p| &p.name))
    );
    if !py["migrations_table"].is_null() {
        assert_eq!(py["migrations_table"], ours.migrations_table.as_str());
    }
    assert_eq!(
        py["shared_pool"],
        serde_json::json!(ours.shared_pool.as_ref().map(|p| &p.modules))
    );
    order
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn python_reads_our_pgdbm_toml_and_orders_its_modules_as_we_do() {
    let order = both_read_alike(&repo("pgdbm.toml"));
    assert_eq!(order, ["myservice", "billing"]);
    // Our top-level keys are one module with [modules.myservice].
    let ours = Project::load(&repo("pgdbm.toml")).unwrap();
    let d = &ours.default_module;
    assert_eq!(
        (d.name.as_str(), d.schema.as_deref()),
        ("myservice", Some("myservice"))
    );
}

#[test]
fn python_reads_the_tsql_ui_fixture_written_in_its_shape() {
    let order = both_read_alike(&repo("tests/ui/python_toml/pgdbm.toml"));
    assert_eq!(order, ["billing"]);
}

#[test]
fn we_read_the_file_python_s_cli_writes() {
    require_pgdbm_0_5_0();
    let dir = tempfile::tempdir().unwrap();
    python(
        &[
            "-c",
            "import sys\nfrom pgdbm.cli.main import cli\nsys.argv = ['pgdbm', 'generate', 'config', '--name', 'demo']\ncli()",
        ],
        dir.path(),
    );
    let file = dir.path().join("pgdbm.toml");
    let generated = std::fs::read_to_string(&file).unwrap();
    assert!(generated.contains("[environments.prod]"), "{generated}");
    assert!(both_read_alike(&file).is_empty());

    // Its commented-out [modules.*] and [shared_pool] sections, switched on.
    let start = generated
        .find("# Module configurations")
        .expect("the generated file has its module examples");
    let mut on = generated[..start].to_string();
    for line in generated[start..].lines() {
        let setting = line.strip_prefix("# ").filter(|l| {
            l.starts_with('[')
                || l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        });
        on.push_str(setting.unwrap_or(line));
        on.push('\n');
    }
    std::fs::write(&file, on).unwrap();
    assert_eq!(both_read_alike(&file), ["users", "billing"]);
}
