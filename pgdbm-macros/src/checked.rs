//! `checked_queries!()`: what sqlx recorded about the workspace's queries, compiled into the
//! binary so that it can describe them against the live database when it starts
//! (`Database::verify_checked_queries`).
//!
//! The files are embedded with `include_str!`, which also makes cargo rebuild when one changes.
//! Their JSON is checked here, so a broken file is a compile error rather than a panic at start.

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::LitStr;
use syn::parse::Parser;

/// The `db_name` of PostgreSQL queries; other drivers' files are left out.
const POSTGRES: &str = "PostgreSQL";

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let dir_arg = parse_args(input)?;
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            Span::call_site(),
            "CARGO_MANIFEST_DIR is not set; build with cargo",
        )
    })?);
    let span = dir_arg.as_ref().map_or_else(Span::call_site, LitStr::span);
    let dir = match &dir_arg {
        Some(lit) => manifest_dir.join(lit.value()),
        None => find_dir(&manifest_dir).ok_or_else(|| {
            syn::Error::new(
                span,
                format!(
                    "checked_queries!: no .sqlx directory in {} or up to its workspace root (nor SQLX_OFFLINE_DIR); write it with `pgdbm prepare`, or name it: checked_queries!(dir = \"…\")",
                    manifest_dir.display()
                ),
            )
        })?,
    };
    let files = query_files(&dir).map_err(|e| syn::Error::new(span, e))?;
    let mut texts = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            syn::Error::new(
                span,
                format!("checked_queries!: cannot read `{}`: {e}", path.display()),
            )
        })?;
        if is_postgres_query(&text).map_err(|e| {
            syn::Error::new(
                span,
                format!(
                    "checked_queries!: `{}` is not a query file sqlx wrote ({e}); refresh .sqlx/ with `pgdbm prepare`",
                    path.display()
                ),
            )
        })? {
            texts.push(path.to_string_lossy().into_owned());
        }
    }
    Ok(quote! {
        {
            static QUERIES: ::std::sync::OnceLock<::pgdbm::checked::CheckedQueries> =
                ::std::sync::OnceLock::new();
            QUERIES.get_or_init(|| {
                ::pgdbm::checked::CheckedQueries::__from_files(&[
                    #(::core::include_str!(#texts)),*
                ])
            })
        }
    })
}

/// `dir = "…"`, or nothing.
fn parse_args(input: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut dir = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("dir") {
            dir = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "checked_queries!: unknown option; the only one is dir = \"path/to/.sqlx\" (relative to Cargo.toml)",
            ))
        }
    });
    parser.parse2(input)?;
    Ok(dir)
}

/// Where sqlx looks for the offline data of this crate: `SQLX_OFFLINE_DIR`, the crate's
/// `.sqlx`, else the nearest ancestor's up to the workspace root (`cargo sqlx prepare
/// --workspace` writes there).
fn find_dir(manifest_dir: &Path) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SQLX_OFFLINE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    pgdbm_core::project::find_near(manifest_dir, ".sqlx", Path::is_dir)
}

/// The `query-*.json` files of `dir`, sorted (a stable order: the binary does not change when
/// nothing did).
fn query_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("checked_queries!: cannot read `{}`: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("query-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `text` is a query file for PostgreSQL; an error when it is not a query file at all.
fn is_postgres_query(text: &str) -> Result<bool, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for field in ["query", "hash"] {
        if !v.get(field).is_some_and(serde_json::Value::is_string) {
            return Err(format!("no `{field}` string"));
        }
    }
    if !v.get("describe").is_some_and(serde_json::Value::is_object) {
        return Err("no `describe` object".into());
    }
    Ok(v.get("db_name").and_then(serde_json::Value::as_str) == Some(POSTGRES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_data_and_embeds_each_file() {
        let out = expand(TokenStream::new()).unwrap().to_string();
        let sqlx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.sqlx");
        let files = query_files(&sqlx).unwrap();
        assert!(!files.is_empty());
        assert_eq!(out.matches("include_str !").count(), files.len(), "{out}");
        assert!(out.contains("CheckedQueries :: __from_files"), "{out}");
    }

    #[test]
    fn refuses_what_is_not_a_query_file() {
        assert_eq!(
            is_postgres_query(
                r#"{"db_name":"PostgreSQL","query":"SELECT 1","hash":"h","describe":{}}"#
            ),
            Ok(true)
        );
        assert_eq!(
            is_postgres_query(r#"{"db_name":"MySQL","query":"SELECT 1","hash":"h","describe":{}}"#),
            Ok(false)
        );
        assert_eq!(
            is_postgres_query(r#"{"db_name":"PostgreSQL","hash":"h"}"#),
            Err("no `query` string".to_string())
        );
        assert!(is_postgres_query("not json").is_err());
        let e = expand(quote!(folder = ".sqlx")).unwrap_err().to_string();
        assert!(e.contains("the only one is dir"), "{e}");
        let e = expand(quote!(dir = "no/such/dir")).unwrap_err().to_string();
        assert!(
            e.contains("cannot read") && e.contains("no/such/dir"),
            "{e}"
        );
    }
}
