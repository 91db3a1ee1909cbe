//! `tsql!`, `tsql_as!`, `tsql_scalar!`, `tsql_str!` and the `tsql_file!` forms: placeholders
//! rendered at compile time, unknown tables rejected, named parameters rewritten to `$n`, the SQL
//! handed to sqlx's macros as a literal.
//!
//! The `tsql_file!` forms read the SQL from a file instead of a literal and hand sqlx the file's
//! rendered text as a literal too (not `query_file!`), so both spellings go through the same
//! checks and the same `.sqlx/` data. Stable Rust cannot point a diagnostic into another file,
//! so errors about a file's SQL are spanned at its path and name `file:line:column` in the
//! message.

use std::borrow::Cow;
use std::path::PathBuf;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

use pgdbm_core::compiled;
use pgdbm_core::named_params;
use pgdbm_core::template::{self, Target};

use crate::config::{self, Config, Module};
use crate::named;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Query,
    QueryAs,
    Scalar,
    Str,
}

/// Where the SQL comes from: the literal itself, or the file a literal names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Literal,
    File,
}

fn macro_name(kind: Kind, source: Source) -> &'static str {
    match (source, kind) {
        (Source::Literal, Kind::Query) => "tsql!",
        (Source::Literal, Kind::QueryAs) => "tsql_as!",
        (Source::Literal, Kind::Scalar) => "tsql_scalar!",
        (_, Kind::Str) => "tsql_str!",
        (Source::File, Kind::Query) => "tsql_file!",
        (Source::File, Kind::QueryAs) => "tsql_file_as!",
        (Source::File, Kind::Scalar) => "tsql_file_scalar!",
    }
}

struct Input {
    name: &'static str,
    module: Option<LitStr>,
    record: Option<syn::Path>,
    sql: String,
    /// The SQL literal, or the path literal of a query file.
    span: Span,
    /// A query file: its path as written and as resolved.
    file: Option<(String, PathBuf)>,
    rest: TokenStream,
}

impl Input {
    /// An error about the SQL, at byte `offset` of the text when known: for a query file the
    /// message starts with `path:line:column`, since the span can only be the path literal.
    fn sql_error(&self, offset: Option<usize>, msg: impl std::fmt::Display) -> syn::Error {
        let msg = match (&self.file, offset) {
            (None, _) => msg.to_string(),
            (Some((shown, _)), None) => format!("{shown}: {msg}"),
            (Some((shown, _)), Some(at)) => {
                let (line, column) = line_column(&self.sql, at);
                format!("{shown}:{line}:{column}: {msg}")
            }
        };
        syn::Error::new(self.span, msg)
    }
}

/// 1-based line and column (in characters, as compilers count) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// `module = "NAME",` if present.
fn parse_module(name: &str, input: ParseStream<'_>) -> syn::Result<Option<LitStr>> {
    if !(input.peek(syn::Ident) && input.peek2(Token![=])) {
        return Ok(None);
    }
    let key: syn::Ident = input.parse()?;
    if key != "module" {
        return Err(syn::Error::new(
            key.span(),
            format!("{name}: unknown option `{key}`; the only option is module = \"NAME\""),
        ));
    }
    input.parse::<Token![=]>()?;
    let module = input.parse()?;
    input.parse::<Token![,]>()?;
    Ok(Some(module))
}

fn parse_input(kind: Kind, source: Source, input: ParseStream<'_>) -> syn::Result<Input> {
    let name = macro_name(kind, source);
    let module = parse_module(name, input)?;
    let record = if kind == Kind::QueryAs {
        let p: syn::Path = input.parse()?;
        input.parse::<Token![,]>()?;
        Some(p)
    } else {
        None
    };
    if !input.peek(LitStr) {
        let span = if input.is_empty() {
            input.span()
        } else {
            let e: syn::Expr = input.parse()?;
            syn::spanned::Spanned::span(&e)
        };
        let msg = match source {
            Source::Literal => format!(
                "{name}: the SQL must be a string literal (raw strings and \"a\" + \"b\" are fine): it is read at compile time, so a variable, a const or a macro call cannot be used"
            ),
            Source::File => format!(
                "{name}: the query file must be a string literal path, relative to the crate's directory (where Cargo.toml is): it is read at compile time"
            ),
        };
        return Err(syn::Error::new(span, msg));
    }
    let first: LitStr = input.parse()?;
    let span = first.span();
    let (sql, file) = match source {
        Source::Literal => (joined_sql(name, first, input)?, None),
        Source::File => {
            if input.peek(Token![+]) {
                return Err(syn::Error::new(
                    span,
                    format!("{name}: the path must be one string literal"),
                ));
            }
            let (sql, path) = read_query_file(name, &first)?;
            (sql, Some((first.value(), path)))
        }
    };
    let rest: TokenStream = input.parse()?;
    if kind == Kind::Str && !rest.is_empty() {
        return Err(syn::Error::new(
            span,
            "tsql_str! takes only the SQL (and optionally module = \"NAME\"); bind arguments where you run it",
        ));
    }
    Ok(Input {
        name,
        module,
        record,
        sql,
        span,
        file,
        rest,
    })
}

/// The SQL of `first` and any `+ "more"` literals after it.
fn joined_sql(name: &str, first: LitStr, input: ParseStream<'_>) -> syn::Result<String> {
    let mut sql = first.value();
    while input.peek(Token![+]) {
        input.parse::<Token![+]>()?;
        let more: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("{name}: only string literals can be joined with +"),
            )
        })?;
        sql.push_str(&more.value());
    }
    Ok(sql)
}

/// The text of the query file `lit` names (relative to `CARGO_MANIFEST_DIR`, as sqlx's
/// `query_file!` reads it) and its absolute path.
fn read_query_file(name: &str, lit: &LitStr) -> syn::Result<(String, PathBuf)> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            lit.span(),
            "CARGO_MANIFEST_DIR is not set; build with cargo",
        )
    })?;
    let path = PathBuf::from(dir).join(lit.value());
    match std::fs::read_to_string(&path) {
        Ok(sql) => Ok((sql, path)),
        Err(e) => Err(syn::Error::new(
            lit.span(),
            format!(
                "{name}: cannot read the query file `{}`: {e}; the path is relative to the crate's directory (CARGO_MANIFEST_DIR, where Cargo.toml is)",
                path.display()
            ),
        )),
    }
}

struct Parsed(Input);

pub(crate) fn expand(kind: Kind, input: TokenStream) -> syn::Result<TokenStream> {
    expand_from(kind, Source::Literal, input)
}

/// The `tsql_file!` forms: the same, with the SQL read from the file the literal names.
pub(crate) fn expand_file(kind: Kind, input: TokenStream) -> syn::Result<TokenStream> {
    expand_from(kind, Source::File, input)
}

fn expand_from(kind: Kind, source: Source, input: TokenStream) -> syn::Result<TokenStream> {
    let parser = |s: ParseStream<'_>| parse_input(kind, source, s).map(Parsed);
    let Parsed(input) = syn::parse::Parser::parse2(parser, input)?;

    let config = config::load().map_err(|m| syn::Error::new(input.span, m))?;
    let (module_name, module) = select_module(&config, input.module.as_ref())?;
    let mut tracked: Vec<PathBuf> = config.file.iter().cloned().collect();
    tracked.extend(input.file.iter().map(|(_, path)| path.clone()));
    check_tables(
        &input,
        &config,
        module_name.as_deref(),
        module,
        &mut tracked,
    )?;

    // tsql_str! binds nothing, so it leaves `:name` as written (for a driver that takes names).
    let (sql, args) = if kind == Kind::Str {
        (Cow::Borrowed(input.sql.as_str()), TokenStream::new())
    } else {
        let r =
            named_params::rewrite(&input.sql).map_err(|e| input.sql_error(Some(e.offset), &e))?;
        let args = named::bind(input.name, &r, input.rest.clone(), input.span)?;
        (r.sql, args)
    };
    // Marked with the schema, so that the runtime can run it on a tenant's schema or refuse a
    // handle of another schema (see `pgdbm_core::compiled`).
    let rendered = match module.schema.as_deref() {
        Some(schema) => compiled::render_marked(&sql, schema),
        None => template::render(&sql, None).map(|r| r.into_owned()),
    }
    .map_err(|e| input.sql_error(None, e))?;

    let mut lit = Literal::string(&rendered);
    lit.set_span(input.span);

    // Rebuild when the schema variable, the config, a migration file or the query file changes.
    let includes = tracked.iter().map(|p| {
        let p = p.to_string_lossy();
        quote! { const _: &[u8] = ::core::include_bytes!(#p); }
    });
    let tracking = quote! {
        const _: ::core::option::Option<&str> = ::core::option_env!("PGDBM_SCHEMA");
        const _: ::core::option::Option<&str> = ::core::option_env!("PGDBM_CONFIG");
        #(#includes)*
    };
    if kind == Kind::Str {
        return Ok(quote_spanned! {input.span=> { #tracking #lit } });
    }
    if !config::has_sqlx_dependency() {
        return Err(syn::Error::new(
            input.span,
            format!(
                "{} expands to sqlx's query macros, which refer to `::sqlx`: add sqlx to this crate's [dependencies], e.g. sqlx = {{ version = \"0.9\", default-features = false, features = [\"macros\", \"postgres\", \"runtime-tokio\"] }}",
                input.name
            ),
        ));
    }
    let call = match kind {
        Kind::Query => quote_spanned! {input.span=> ::sqlx::query!(#lit #args) },
        Kind::Scalar => quote_spanned! {input.span=> ::sqlx::query_scalar!(#lit #args) },
        Kind::QueryAs => {
            let record = input.record.as_ref().expect("parsed for tsql_as!");
            quote_spanned! {input.span=> ::sqlx::query_as!(#record, #lit #args) }
        }
        Kind::Str => unreachable!(),
    };
    Ok(quote_spanned! {input.span=> { #tracking #call } })
}

/// Every `{{tables.x}}` must be a table the module's migrations create (or, for an explicit
/// schema, the migrations of the module owning that schema); the migration files read are
/// added to `tracked`.
fn check_tables(
    input: &Input,
    config: &Config,
    module_name: Option<&str>,
    module: &Module,
    tracked: &mut Vec<PathBuf>,
) -> syn::Result<()> {
    let found =
        template::placeholders(&input.sql).map_err(|e| input.sql_error(Some(e.offset), &e))?;
    let Some((dir, shown)) = &module.migrations else {
        return Ok(());
    };
    let err = |m: String| syn::Error::new(input.span, m);
    let (relations, files) = config::relations(dir).map_err(err)?;
    tracked.extend(files);
    for p in &found {
        let Target::Table { schema, name } = &p.target else {
            continue;
        };
        let known = match schema {
            None => relations.contains(name),
            Some(s) => {
                relations.contains_in(s, name)
                    || match other_module_with_schema(config, s) {
                        Some(Module {
                            migrations: Some((odir, _)),
                            ..
                        }) => {
                            let (orel, ofiles) = config::relations(odir).map_err(err)?;
                            tracked.extend(ofiles);
                            orel.contains(name)
                        }
                        // A module without migrations, or a schema no module manages: nothing
                        // to check against.
                        _ => true,
                    }
            }
        };
        if !known {
            let created: Vec<&str> = relations.own().collect();
            let mut msg = format!(
                "unknown table `{name}` in {}; migrations in {}/ create: {}",
                p.text,
                shown.trim_end_matches('/'),
                if created.is_empty() {
                    "nothing".to_string()
                } else {
                    created.join(", ")
                }
            );
            if schema.is_none()
                && let Some(s) = relations.suggest(name)
            {
                msg.push_str(&format!("; did you mean `{s}`?"));
            }
            if let Some(m) = module_name {
                msg.push_str(&format!(" (module `{m}`)"));
            }
            return Err(input.sql_error(Some(p.start), msg));
        }
    }
    Ok(())
}

fn select_module<'c>(
    config: &'c Config,
    module: Option<&LitStr>,
) -> syn::Result<(Option<String>, &'c Module)> {
    let Some(lit) = module else {
        return Ok((None, &config.default));
    };
    let name = lit.value();
    match config.modules.get(&name) {
        Some(m) => Ok((Some(name), m)),
        None => Err(syn::Error::new(
            lit.span(),
            match &config.file {
                None => format!(
                    "no module `{name}`: there is no pgdbm.toml in this crate or its workspace root; add one with a [modules.{name}] section (schema = \"…\", migrations_path = \"…\")"
                ),
                Some(f) => format!(
                    "no module `{name}` in {}; it declares: {}",
                    f.display(),
                    if config.modules.is_empty() {
                        "no modules".to_string()
                    } else {
                        config
                            .modules
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            },
        )),
    }
}

fn other_module_with_schema<'c>(config: &'c Config, schema: &str) -> Option<&'c Module> {
    config
        .modules
        .values()
        .chain(std::iter::once(&config.default))
        .find(|m| m.schema.as_deref() == Some(schema))
}

impl Parse for Parsed {
    fn parse(_: ParseStream<'_>) -> syn::Result<Self> {
        unreachable!("parsed with parse_input")
    }
}

#[cfg(test)]
mod tests {
    //! Expansion without a compiler round trip. `CARGO_MANIFEST_DIR` is this crate's directory,
    //! so the workspace's pgdbm.toml (schema `myservice`, migrations/, module `billing`) applies.
    use super::*;

    fn expand_str(kind: Kind, input: TokenStream) -> Result<String, String> {
        expand(kind, input)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn renders_for_the_configured_schema() {
        let out = expand_str(
            Kind::Str,
            quote!("SELECT * FROM <<tables.users>> WHERE id = $1"),
        )
        .unwrap();
        assert!(
            out.contains(
                r#""/* pgdbm: schema=myservice at=14 */ SELECT * FROM \"myservice\".users WHERE id = $1""#
            ),
            "{out}"
        );
        assert!(out.contains("option_env ! (\"PGDBM_SCHEMA\")"), "{out}");
        assert!(out.contains("pgdbm.toml"), "tracks the config file: {out}");
        assert!(
            out.contains("001_create_users.sql"),
            "tracks the migrations: {out}"
        );
        let out = expand_str(
            Kind::Str,
            quote!(module = "billing", "SELECT * FROM {{tables.invoices}}"),
        )
        .unwrap();
        assert!(out.contains(r#"\"billing\".invoices"#), "{out}");
        let out = expand_str(Kind::Str, quote!("SELECT 1 FROM " + "<<tables.posts>>")).unwrap();
        assert!(
            out.contains(r#"at=14 */ SELECT 1 FROM \"myservice\".posts""#),
            "{out}"
        );
    }

    #[test]
    fn rejects_unknown_tables_with_a_suggestion() {
        let e = expand_str(Kind::Str, quote!("SELECT * FROM <<tables.userz>>")).unwrap_err();
        assert_eq!(
            e,
            "unknown table `userz` in <<tables.userz>>; migrations in migrations/ create: posts, users; did you mean `users`?"
        );
        let e = expand_str(
            Kind::Str,
            quote!(module = "billing", "SELECT * FROM <<tables.users>>"),
        )
        .unwrap_err();
        assert!(e.contains("create: invoices (module `billing`)"), "{e}");
        // An explicit schema that a module manages is checked against that module.
        let e =
            expand_str(Kind::Str, quote!("SELECT * FROM {{tables.billing.users}}")).unwrap_err();
        assert!(e.contains("unknown table `users`"), "{e}");
        assert!(
            expand_str(
                Kind::Str,
                quote!("SELECT * FROM {{tables.billing.invoices}}")
            )
            .is_ok()
        );
        // A schema no module manages is not checked.
        assert!(expand_str(Kind::Str, quote!("SELECT * FROM {{tables.audit.events}}")).is_ok());
    }

    #[test]
    fn rejects_bad_input() {
        let e = expand_str(Kind::Str, quote!(some_variable)).unwrap_err();
        assert!(
            e.starts_with("tsql_str!: the SQL must be a string literal"),
            "{e}"
        );
        let e = expand_str(Kind::Str, quote!(module = "nope", "SELECT 1")).unwrap_err();
        assert!(
            e.contains("no module `nope`") && e.contains("billing"),
            "{e}"
        );
        let e = expand_str(Kind::Str, quote!(modul = "billing", "SELECT 1")).unwrap_err();
        assert!(e.contains("unknown option `modul`"), "{e}");
        let e = expand_str(Kind::Str, quote!("SELECT * FROM {{tables.}}")).unwrap_err();
        assert!(e.contains("the table name is empty"), "{e}");
        let e = expand_str(Kind::Str, quote!("SELECT 1", 5)).unwrap_err();
        assert!(e.contains("tsql_str! takes only the SQL"), "{e}");
    }

    #[test]
    fn passes_arguments_through_and_names_sqlx() {
        // This crate has no sqlx dependency, so the query forms say what to add.
        let e = expand_str(
            Kind::Query,
            quote!("SELECT id FROM <<tables.users>> WHERE id = $1", id),
        )
        .unwrap_err();
        assert!(e.contains("add sqlx to this crate's [dependencies]"), "{e}");
    }

    #[test]
    fn named_parameters_are_rewritten_except_by_tsql_str() {
        let out = expand_str(
            Kind::Str,
            quote!("SELECT id FROM <<tables.users>> WHERE id = :id"),
        )
        .unwrap();
        assert!(out.contains("WHERE id = :id"), "{out}");
        let e = expand_str(
            Kind::Query,
            quote!("SELECT id FROM <<tables.users>> WHERE id = :id AND x = $1"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("the query mixes the named parameter `:id`"),
            "{e}"
        );
        let e = expand_str(
            Kind::Query,
            quote!(
                "SELECT id FROM <<tables.users>> WHERE id = :id",
                id = 1,
                x = 2
            ),
        )
        .unwrap_err();
        assert!(e.contains("the named argument `x` is not used"), "{e}");
    }

    #[test]
    fn query_files_are_read_and_their_errors_located() {
        // CARGO_MANIFEST_DIR is pgdbm-macros/: the repository's tests/queries is one level up.
        let e = expand_file(
            Kind::Query,
            quote!("../tests/queries/ui_unknown_table.sql", id = 1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "../tests/queries/ui_unknown_table.sql:4:6: unknown table `accounts` in <<tables.accounts>>"
            ),
            "{e}"
        );
        // A good file gets as far as the sqlx check (this crate has no sqlx dependency).
        let e = expand_file(
            Kind::QueryAs,
            quote!(
                module = "myservice",
                User,
                "../tests/queries/find_user_by_email.sql"
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("tsql_file_as! expands to sqlx's query macros"),
            "{e}"
        );
        let e = expand_file(Kind::Scalar, quote!("queries/missing.sql"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("tsql_file_scalar!: cannot read the query file `")
                && e.contains("pgdbm-macros/queries/missing.sql`"),
            "{e}"
        );
        let e = expand_file(Kind::Query, quote!("a.sql" + "b.sql"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "tsql_file!: the path must be one string literal");
    }

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let text = "SELECT\n  ö, <<tables.x>>\nFROM";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 7), (2, 1));
        assert_eq!(line_column(text, text.find("<<").unwrap()), (2, 6));
        assert_eq!(line_column(text, text.len()), (3, 5));
    }

    #[test]
    fn sees_sqlx_in_any_dependency_section() {
        let has = |t: &str| crate::config::manifest_has_sqlx(&t.parse().unwrap());
        assert!(has("[dependencies]\nsqlx = \"0.9\""));
        assert!(has("[dev-dependencies]\nsqlx = { workspace = true }"));
        assert!(has("[target.'cfg(unix)'.dependencies]\nsqlx = \"0.9\""));
        assert!(!has("[dependencies]\npgdbm = \"0.1\""));
    }
}
