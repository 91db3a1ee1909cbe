"""Cross-check with pgdbm (Python): a history written by either runner is up to date for the other.

The migrations run from a copy of MIGRATIONS_DIR with a repeatable file added
(`repeatable/10_user_emails.sql`): pgdbm (Python) must neither run it nor see its history row,
and pgdbm (Rust) applies it once, after the versioned files, whichever runner went first.

Usage: python3 .ci/python-compat.py ADMIN_URL PGDBM_CLI MIGRATIONS_DIR
"""
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile

import asyncpg
from pgdbm import AsyncDatabaseManager, AsyncMigrationManager, DatabaseConfig

admin_url, cli, source = sys.argv[1], sys.argv[2], sys.argv[3]
scratch = tempfile.mkdtemp(prefix="pgdbm-python-compat-")
migrations = os.path.join(scratch, "migrations")
shutil.copytree(source, migrations)
os.makedirs(os.path.join(migrations, "repeatable"), exist_ok=True)
REPEATABLE = "repeatable/10_user_emails.sql"
with open(os.path.join(migrations, REPEATABLE), "w") as f:
    f.write("CREATE OR REPLACE VIEW {{tables.user_emails}} AS SELECT id, email FROM {{tables.users}};\n")
db_name = "pgdbm_python_compat"
db_url = admin_url.rsplit("/", 1)[0] + "/" + db_name


def rust(schema, *args):
    env = dict(os.environ, DATABASE_URL=db_url)
    out = subprocess.run(
        [cli, "migrate", *args, "--schema", schema, "--module", "compat", "--dir", migrations],
        env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"pgdbm (Rust) {args} failed: {out.stderr}")
    return out.stdout


async def python_apply(schema):
    db = AsyncDatabaseManager(DatabaseConfig(connection_string=db_url, schema=schema,
                                             min_connections=1, max_connections=2))
    await db.connect()
    try:
        return await AsyncMigrationManager(db, migrations_path=migrations,
                                           module_name="compat").apply_pending_migrations()
    finally:
        await db.disconnect()


async def main():
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {db_name}")
    try:
        # Python first (it ignores repeatable/), then Rust: only the repeatable file is left.
        first = await python_apply("py_first")
        assert first["status"] == "success", first
        assert all("repeatable" not in a["filename"] for a in first["applied"]), first
        out = rust("py_first", "apply")
        assert out.startswith(f"applied {REPEATABLE} (") and out.count("applied ") == 1, (
            f"Rust after Python: {out!r}"
        )
        out = rust("py_first", "apply")
        assert out.startswith("up to date"), f"Rust after Python, again: {out!r}"
        status = rust("py_first", "status")
        assert "pending" not in status and "MODIFIED" not in status, status
        print(f"Python applied {len(first['applied'])} files; Rust then: {out.strip()}")

        # Rust first, then Python: the repeatable file's row is invisible to Python.
        out = rust("rust_first", "apply")
        assert out.count("applied ") == len(first["applied"]) + 1, out
        second = await python_apply("rust_first")
        assert second["status"] == "up_to_date", f"Python after Rust: {second}"
        assert all("repeatable" not in f for f in second["skipped"]), second
        assert len(second["skipped"]) == len(first["applied"]), second
        print(f"Rust applied {out.count('applied ')} files (one repeatable); Python: {second['status']}")
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        await admin.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print("pgdbm (Python) and pgdbm (Rust) read each other's history: OK")


asyncio.run(main())
