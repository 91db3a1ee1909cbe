//! The previous release, as `--check-compat` names it: a directory (its `.sqlx/` itself, or a
//! checkout holding one) or a git ref of the current repository. From it come the queries it
//! was compiled with, its migration files (for `--new-against-old`) and its Rust files (to find
//! where a query is written).
//!
//! Git is read without a checkout (`git ls-tree`, `git cat-file --batch`), so the working tree,
//! its index and its branch are never touched.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgdbm_core::checked::RecordedQuery;

use crate::context::{Failure, Result, Target, fail};

/// Where the previous release is.
pub(crate) enum Previous {
    /// A directory: the `.sqlx` directory, and the checkout it belongs to when there is one.
    Dir {
        sqlx: PathBuf,
        checkout: Option<PathBuf>,
    },
    /// A commit of the repository the workspace is in.
    Git(GitTree),
}

/// A commit, and where the workspace is inside its repository.
pub(crate) struct GitTree {
    /// The ref as given (`v1.4.0`, `HEAD~1`).
    given: String,
    /// The commit it resolves to.
    commit: String,
    /// The repository's top directory.
    root: PathBuf,
    /// The workspace's path inside the repository, `""` or ending in `/`.
    prefix: String,
}

impl fmt::Display for Previous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Previous::Dir { sqlx, checkout } => {
                write!(f, "the directory {}", sqlx.display())?;
                if let Some(c) = checkout {
                    write!(f, " (checkout {})", c.display())?;
                }
                Ok(())
            }
            Previous::Git(g) => write!(
                f,
                "the git ref `{}` (commit {})",
                g.given,
                &g.commit[..g.commit.len().min(12)]
            ),
        }
    }
}

impl Previous {
    /// `arg` as a directory if one exists there, else as a git ref of the repository holding
    /// `workspace`.
    pub(crate) fn resolve(arg: &str, workspace: &Path) -> Result<Previous> {
        let path = Path::new(arg);
        if path.is_dir() {
            return Previous::from_dir(path, workspace);
        }
        let repo = repository(workspace);
        if let Ok((root, prefix)) = &repo
            && !arg.starts_with('-')
            && let Ok(out) = git(
                root,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{arg}^{{commit}}"),
                ],
            )
        {
            return Ok(Previous::Git(GitTree {
                given: arg.to_string(),
                commit: String::from_utf8_lossy(&out).trim().to_string(),
                root: root.clone(),
                prefix: prefix.clone(),
            }));
        }
        let why = match repo {
            Ok((root, _)) => format!("no commit of the repository in {}", root.display()),
            Err(e) => format!(
                "and {} is not in a git repository ({e})",
                workspace.display()
            ),
        };
        fail(format!(
            "`{arg}` is neither a directory nor a git ref ({why}); give the previous release's .sqlx directory or checkout, or a tag, branch or commit such as v1.4.0 or HEAD~1"
        ))
    }

    fn from_dir(dir: &Path, workspace: &Path) -> Result<Previous> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let checkout_of = |sqlx: &Path| {
            sqlx.parent()
                .filter(|p| p.join("Cargo.toml").is_file())
                .map(Path::to_path_buf)
        };
        let is_sqlx = dir.file_name().is_some_and(|n| n == ".sqlx")
            || std::fs::read_dir(&dir).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("query-") && name.ends_with(".json")
                })
            });
        if is_sqlx {
            return Ok(Previous::Dir {
                checkout: checkout_of(&dir),
                sqlx: dir,
            });
        }
        // A checkout: its .sqlx/, or (a checkout of the whole repository) the one at the
        // workspace's place in it.
        let mut candidates = vec![dir.join(".sqlx")];
        if let Ok((_, prefix)) = repository(workspace)
            && !prefix.is_empty()
        {
            candidates.push(dir.join(&prefix).join(".sqlx"));
        }
        match candidates.into_iter().find(|c| c.is_dir()) {
            Some(sqlx) => Ok(Previous::Dir {
                checkout: sqlx.parent().map(Path::to_path_buf),
                sqlx,
            }),
            // A checkout without .sqlx/ still has its migrations (--new-against-old).
            None if dir.join("Cargo.toml").is_file() => Ok(Previous::Dir {
                sqlx: dir.join(".sqlx"),
                checkout: Some(dir),
            }),
            None => fail(format!(
                "{} holds no query-*.json, no .sqlx directory and no Cargo.toml; give the previous release's .sqlx directory or its checkout",
                dir.display()
            )),
        }
    }

    /// Where its `.sqlx/` is, when the name does not say: `, its sub/.sqlx/`.
    pub(crate) fn sqlx_shown(&self) -> String {
        match self {
            Previous::Dir { .. } => String::new(),
            Previous::Git(g) => format!(", its {}.sqlx/", g.prefix),
        }
    }

    /// The short name used in messages: the ref, or the directory.
    pub(crate) fn name(&self) -> String {
        match self {
            Previous::Dir { sqlx, checkout } => {
                checkout.as_ref().unwrap_or(sqlx).display().to_string()
            }
            Previous::Git(g) => g.given.clone(),
        }
    }

    /// The queries of its `.sqlx/`, in file-name order.
    pub(crate) fn queries(&self) -> Result<Vec<RecordedQuery>> {
        match self {
            Previous::Dir { sqlx, .. } if !sqlx.is_dir() => fail(format!(
                "the checkout {} has no .sqlx directory (was .sqlx/ committed in that release? `pgdbm prepare` writes it)",
                self.name()
            )),
            Previous::Dir { sqlx, .. } => {
                RecordedQuery::read_dir(sqlx).map_err(|e| Failure(e.to_string()))
            }
            Previous::Git(g) => {
                let dir = format!("{}.sqlx/", g.prefix);
                let names: Vec<String> = g
                    .ls_tree(&dir, false)?
                    .into_iter()
                    .filter(|p| {
                        let name = p.rsplit('/').next().unwrap_or(p);
                        name.starts_with("query-") && name.ends_with(".json")
                    })
                    .collect();
                if names.is_empty() {
                    return fail(format!(
                        "`{}` has no {dir}query-*.json (was .sqlx/ committed in that release? `pgdbm prepare` writes it)",
                        g.given
                    ));
                }
                g.read_files(&names)?
                    .into_iter()
                    .map(|(path, text)| {
                        RecordedQuery::from_json(&text)
                            .map_err(|e| Failure(format!("cannot read `{}:{path}`: {e}", g.given)))
                    })
                    .collect()
            }
        }
    }

    /// Its migrations for each of `targets` (the current modules, whose directories are looked
    /// up at the same place in the previous release): the checkout's directory, or the files at
    /// the git ref written under `scratch`. A module whose directory did not exist then gets an
    /// empty one, and a note.
    pub(crate) fn migrations(
        &self,
        workspace: &Path,
        targets: &[Target],
        scratch: &Path,
    ) -> Result<Vec<Target>> {
        let mut old = Vec::with_capacity(targets.len());
        for (i, t) in targets.iter().enumerate() {
            let dir = match self {
                Previous::Dir { checkout: None, .. } => {
                    return fail(
                        "--new-against-old needs the previous release's migrations, and a bare .sqlx directory has none: give its checkout directory or a git ref",
                    );
                }
                Previous::Dir {
                    checkout: Some(c), ..
                } => c.join(inside(&t.dir, workspace, "the workspace")?),
                Previous::Git(g) => {
                    let rel = inside(&t.dir, &g.root, "the repository")?;
                    let dir = scratch.join(format!("previous-{i}"));
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
                    let listed = g.ls_tree(&format!("{}/", rel.display()), false)?;
                    let sql: Vec<String> =
                        listed.into_iter().filter(|p| p.ends_with(".sql")).collect();
                    for (path, text) in g.read_files(&sql)? {
                        let name = path.rsplit('/').next().unwrap_or(&path);
                        std::fs::write(dir.join(name), text)
                            .map_err(|e| Failure(format!("cannot write {}: {e}", dir.display())))?;
                    }
                    dir
                }
            };
            let dir = if dir.is_dir() {
                dir
            } else {
                anstream::eprintln!(
                    "pgdbm: module {} has no migrations in {} (no {}); its schema starts empty",
                    t.module,
                    self.name(),
                    dir.display()
                );
                let empty = scratch.join(format!("empty-{i}"));
                std::fs::create_dir_all(&empty)
                    .map_err(|e| Failure(format!("cannot create {}: {e}", empty.display())))?;
                empty
            };
            old.push(Target { dir, ..t.clone() });
        }
        Ok(old)
    }

    /// Its Rust files, as (path shown, text).
    pub(crate) fn rust_files(&self) -> Result<Vec<(String, String)>> {
        match self {
            Previous::Dir {
                checkout: Some(c), ..
            } => Ok(rust_files_in(c)),
            Previous::Dir { checkout: None, .. } => Ok(Vec::new()),
            Previous::Git(g) => {
                let names: Vec<String> = g
                    .ls_tree(&g.prefix, true)?
                    .into_iter()
                    .filter(|p| p.ends_with(".rs") && !skipped_path(&p[g.prefix.len()..]))
                    .collect();
                Ok(g.read_files(&names)?
                    .into_iter()
                    .map(|(p, text)| (p[g.prefix.len()..].to_string(), text))
                    .collect())
            }
        }
    }
}

/// `path` relative to `base` (both made absolute), or an error saying it lies outside `what`.
fn inside(path: &Path, base: &Path, what: &str) -> Result<PathBuf> {
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    match abs(path).strip_prefix(abs(base)) {
        Ok(rel) => Ok(rel.to_path_buf()),
        Err(_) => fail(format!(
            "the migrations directory {} is outside {what} ({}), so the previous release's copy of it cannot be found",
            path.display(),
            base.display()
        )),
    }
}

/// Paths never scanned for queries: build output and hidden directories.
fn skipped_path(rel: &str) -> bool {
    rel.split('/')
        .rev()
        .skip(1)
        .any(|d| d == "target" || d.starts_with('.'))
}

/// The `.rs` files under `dir` (build output and hidden directories left out), as (path
/// relative to `dir`, text); unreadable files are left out too.
pub(crate) fn rust_files_in(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && name != "target" && !name.starts_with('.') {
                stack.push(path);
            } else if kind.is_file()
                && name.ends_with(".rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let shown = path.strip_prefix(dir).unwrap_or(&path);
                out.push((shown.display().to_string(), text));
            }
        }
    }
    out.sort();
    out
}

/// The repository holding `dir`: its top directory and `dir`'s path inside it (`""` or ending
/// in `/`).
fn repository(dir: &Path) -> Result<(PathBuf, String)> {
    let out = git(dir, &["rev-parse", "--show-toplevel", "--show-prefix"])?;
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let root = PathBuf::from(lines.next().unwrap_or_default());
    let prefix = lines.next().unwrap_or_default().to_string();
    Ok((root, prefix))
}

/// `git ARGS` in `dir`: its standard output, or its error.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| Failure(format!("cannot run git ({e}); is it installed?")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return fail(format!(
            "`git {}` failed: {}",
            args.join(" "),
            err.trim().lines().next().unwrap_or("no message")
        ));
    }
    Ok(out.stdout)
}

impl GitTree {
    /// The paths (from the repository's top) under `dir` (`""`, or ending in `/`) at the
    /// commit: its entries, or with `recursive` every file below it.
    fn ls_tree(&self, dir: &str, recursive: bool) -> Result<Vec<String>> {
        let mut args = vec!["ls-tree", "--name-only", "-z", "--full-tree"];
        if recursive {
            args.push("-r");
        }
        args.push(&self.commit);
        if !dir.is_empty() {
            args.extend(["--", dir]);
        }
        let out = git(&self.root, &args)?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// The text of each of `paths` at the commit, in one `git cat-file --batch`.
    fn read_files(&self, paths: &[String]) -> Result<Vec<(String, String)>> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Failure(format!("cannot run git cat-file: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let requests: String = paths
            .iter()
            .map(|p| format!("{}:{p}\n", self.commit))
            .collect();
        // Written from a thread, so a full output pipe cannot stall the input.
        let writer = std::thread::spawn(move || stdin.write_all(requests.as_bytes()));
        let mut out = Vec::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_end(&mut out)
            .map_err(|e| Failure(format!("cannot read git cat-file's output: {e}")))?;
        let _ = writer.join();
        let _ = child.wait();
        parse_batch(&out, paths)
    }
}

/// `git cat-file --batch` output: per object `<oid> <type> <size>\n<content>\n`, or
/// `<name> missing\n`.
fn parse_batch(mut out: &[u8], paths: &[String]) -> Result<Vec<(String, String)>> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let Some(eol) = out.iter().position(|b| *b == b'\n') else {
            return fail(format!("git cat-file stopped before {path}"));
        };
        let header = String::from_utf8_lossy(&out[..eol]).into_owned();
        let size: usize = match header.split(' ').collect::<Vec<_>>()[..] {
            [_, "blob", size] => size.parse().unwrap_or(0),
            _ => return fail(format!("git cannot read {path}: {header}")),
        };
        let start = eol + 1;
        let Some(body) = out.get(start..start + size) else {
            return fail(format!("git cat-file's output for {path} is cut short"));
        };
        files.push((path.clone(), String::from_utf8_lossy(body).into_owned()));
        out = out.get(start + size + 1..).unwrap_or_default();
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_is_split_by_size() {
        let out = b"abc blob 5\nhello\ndef blob 0\n\n";
        let files = parse_batch(out, &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            files,
            vec![("a".into(), "hello".into()), ("b".into(), String::new())]
        );
        let e = parse_batch(b"HEAD:x missing\n", &["x".into()]).unwrap_err();
        assert!(e.0.contains("missing"), "{e}");
    }

    #[test]
    fn build_output_and_hidden_directories_are_not_scanned() {
        assert!(skipped_path("target/debug/build/x.rs"));
        assert!(skipped_path("crate/.git/x.rs"));
        assert!(!skipped_path("src/main.rs"));
        assert!(!skipped_path("main.rs"));
    }
}
