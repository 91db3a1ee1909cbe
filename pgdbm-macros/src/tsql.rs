//! `tsql!`, `tsql_as!`, `tsql_scalar!`, `tsql_str!`: placeholders rendered at compile time,
//! unknown tables rejected, the SQL handed to sqlx's macros as a literal.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

use pgdbm_core::compiled;
use pgdbm_core::template::{self, Target};

use crate::config::{self, Config, Module};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Query,
    QueryAs,
    Scalar,
    Str,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Query => "tsql!",
            Kind::QueryAs => "tsql_as!",
            Kind::Scalar => "tsql_scalar!",
            Kind::Str => "tsql_str!",
        }
    }
}

struct Input {
    module: Option<LitStr>,
    record: Option<syn::Path>,
    sql: String,
    span: Span,
    rest: TokenStream,
}

fn parse_input(kind: Kind, input: ParseStream<'_>) -> syn::Result<Input> {
    let mut module = None;
    if input.peek(syn::Ident) && input.peek2(Token![=]) {
        let key: syn::Ident = input.parse()?;
        if key != "module" {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "{}: unknown option `{key}`; the only option is module = \"NAME\"",
                    kind.name()
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        module = Some(input.parse()?);
        input.parse::<Token![,]>()?;
    }
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
        return Err(syn::Error::new(
            span,
            format!(
                "{}: the SQL must be a string literal (raw strings and \"a\" + \"b\" are fine): it is read at compile time, so a variable, a const or a macro call cannot be used",
                kind.name()
            ),
        ));
    }
    let first: LitStr = input.parse()?;
    let span = first.span();
    let mut sql = first.value();
    while input.peek(Token![+]) {
        input.parse::<Token![+]>()?;
        let more: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("{}: only string literals can be joined with +", kind.name()),
            )
        })?;
        sql.push_str(&more.value());
    }
    let rest: TokenStream = input.parse()?;
    if kind == Kind::Str && !rest.is_empty() {
        return Err(syn::Error::new(
            span,
            "tsql_str! takes only the SQL (and optionally module = \"NAME\"); bind arguments where you run it",
        ));
    }
    Ok(Input {
        module,
        record,
        sql,
        span,
        rest,
    })
}

struct Parsed(Input);

pub(crate) fn expand(kind: Kind, input: TokenStream) -> syn::Result<TokenStream> {
    let parser = |s: ParseStream<'_>| parse_input(kind, s).map(Parsed);
    let Parsed(input) = syn::parse::Parser::parse2(parser, input)?;
    let err = |msg: String| syn::Error::new(input.span, msg);

    let config = config::load().map_err(err)?;
    let (module_name, module) = select_module(&config, input.module.as_ref())?;
    let mut tracked: Vec<std::path::PathBuf> = config.file.iter().cloned().collect();

    let found = template::placeholders(&input.sql).map_err(|e| err(e.to_string()))?;
    if let Some((dir, shown)) = &module.migrations {
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
                        || match other_module_with_schema(&config, s) {
                            Some(other) => match &other.migrations {
                                Some((odir, _)) => {
                                    let (orel, ofiles) = config::relations(odir).map_err(err)?;
                                    tracked.extend(ofiles);
                                    orel.contains(name)
                                }
                                None => true,
                            },
                            // A schema no module manages: nothing to check against.
                            None => true,
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
                if let Some(m) = &module_name {
                    msg.push_str(&format!(" (module `{m}`)"));
                }
                return Err(err(msg));
            }
        }
    }
    // Marked with the schema, so that the runtime can run it on a tenant's schema or refuse a
    // handle of another schema (see `pgdbm_core::compiled`).
    let rendered = match module.schema.as_deref() {
        Some(schema) => compiled::render_marked(&input.sql, schema),
        None => template::render(&input.sql, None).map(|r| r.into_owned()),
    }
    .map_err(|e| err(e.to_string()))?;

    let mut lit = Literal::string(&rendered);
    lit.set_span(input.span);

    // Rebuild when the schema variable, the config or a migration file changes.
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
        return Err(err(format!(
            "{} expands to sqlx's query macros, which refer to `::sqlx`: add sqlx to this crate's [dependencies], e.g. sqlx = {{ version = \"0.9\", default-features = false, features = [\"macros\", \"postgres\", \"runtime-tokio\"] }}",
            kind.name()
        )));
    }
    let rest = &input.rest;
    let call = match kind {
        Kind::Query => quote_spanned! {input.span=> ::sqlx::query!(#lit #rest) },
        Kind::Scalar => quote_spanned! {input.span=> ::sqlx::query_scalar!(#lit #rest) },
        Kind::QueryAs => {
            let record = input.record.as_ref().expect("parsed for tsql_as!");
            quote_spanned! {input.span=> ::sqlx::query_as!(#record, #lit #rest) }
        }
        Kind::Str => unreachable!(),
    };
    Ok(quote_spanned! {input.span=> { #tracking #call } })
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
    fn sees_sqlx_in_any_dependency_section() {
        let has = |t: &str| crate::config::manifest_has_sqlx(&t.parse().unwrap());
        assert!(has("[dependencies]\nsqlx = \"0.9\""));
        assert!(has("[dev-dependencies]\nsqlx = { workspace = true }"));
        assert!(has("[target.'cfg(unix)'.dependencies]\nsqlx = \"0.9\""));
        assert!(!has("[dependencies]\npgdbm = \"0.1\""));
    }
}
