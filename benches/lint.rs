//! Lint time for 200 migration files (issue 25's closing note): generated files of the shapes a
//! service's history has (tables with placeholders, indexes, added columns, a foreign key, a
//! no-transaction index, a backfill), linted as `pgdbm migrate lint` does (each file alone) and as
//! `apply` does (one run, with context), beside the time to read them from disk. No database.
//!
//! Run: `cargo bench --bench lint` (env `PGDBM_BENCH_FILES` for the file count, default 200,
//! `PGDBM_BENCH_RUNS` for repetitions, default 5). Figures print; nothing is asserted.

use std::time::{Duration, Instant};

use pgdbm::lint::{LintOptions, lint_run, lint_standalone};
use pgdbm::migrate::MigrationSet;

fn file(i: usize) -> String {
    let t = format!("{{{{tables.t_{}}}}}", i / 5 * 5);
    match i % 5 {
        0 => format!(
            "-- table {i}\nCREATE TABLE {t} (\n    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    name TEXT NOT NULL,\n    owner_id BIGINT,\n    status TEXT NOT NULL DEFAULT 'new',\n    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n);\nCREATE INDEX t_{i}_created_idx ON {t} (created_at);\nCOMMENT ON TABLE {t} IS 'generated {i}';\n"
        ),
        1 => format!(
            "ALTER TABLE {t} ADD COLUMN note_{i} TEXT;\nALTER TABLE {t} ADD COLUMN score_{i} INTEGER DEFAULT 0;\n"
        ),
        2 => format!(
            "-- pgdbm:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_{i}_name_idx ON {t} (name);\n"
        ),
        3 => format!(
            "ALTER TABLE {t} ADD CONSTRAINT t_{i}_owner_fk FOREIGN KEY (owner_id) REFERENCES {t} (id) NOT VALID;\nUPDATE {t} SET status = 'active' WHERE status = 'new' AND created_at < now() - interval '1 day';\n"
        ),
        _ => format!(
            "ALTER TABLE {t} VALIDATE CONSTRAINT t_{}_owner_fk;\nCREATE OR REPLACE FUNCTION {{{{schema}}}}.f_{i}(x bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT x + {i} $$;\n",
            i - 1
        ),
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let files = env("PGDBM_BENCH_FILES", 200);
    let runs = env("PGDBM_BENCH_RUNS", 5);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = 0;
    for i in 0..files {
        let text = file(i);
        bytes += text.len();
        std::fs::write(dir.path().join(format!("{:04}_step_{i}.sql", i + 1)), text).unwrap();
    }
    let options = LintOptions::new();
    let set = MigrationSet::from_dir(dir.path()).unwrap();
    let read = best(runs, || {
        MigrationSet::from_dir(dir.path()).unwrap();
    });
    let mut denied = (0, 0);
    let standalone = best(runs, || {
        denied.0 = lint_standalone(set.iter(), Some("app"), &options)
            .denied()
            .count();
    });
    let run = best(runs, || {
        denied.1 = lint_run(set.iter(), Some("app"), &options).denied().count();
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("lint: {files} files, {} KiB, best of {runs}", bytes / 1024);
    println!("  read the files:                 {:8.1} ms", ms(read));
    println!(
        "  lint each alone (migrate lint): {:8.1} ms  ({:.0} us/file, {} unsafe)",
        ms(standalone),
        ms(standalone) * 1000.0 / files as f64,
        denied.0
    );
    println!(
        "  lint as one run (apply):        {:8.1} ms  ({} unsafe)",
        ms(run),
        denied.1
    );
    println!(
        "  lint / read ratio:              {:8.1}x",
        ms(standalone) / ms(read).max(0.001)
    );
}
