//! The arguments of a `tsql!` query with named parameters: `email = e` matched to the `:email`
//! of the SQL, put in `$n` order for sqlx, which only takes arguments by position.
//!
//! A name the SQL uses but the call does not give is taken from a variable of that name in
//! scope, as `format!("{email}")` does: the expansion passes the identifier `email`, spanned at
//! the SQL literal, so a missing variable is rustc's "cannot find value `email` in this scope"
//! pointing at the query. Every other misuse (a name given but not used, given twice, a
//! positional argument next to names) is an error here, spanned at the argument, all of them
//! reported at once.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Token};

use pgdbm_core::named_params::Rewritten;

/// One argument after the SQL.
enum Arg {
    /// `name = value`.
    Named { name: Ident, value: Expr },
    /// Any other expression.
    Positional(Expr),
}

impl Arg {
    /// The argument's tokens, for an error spanning all of it.
    fn tokens(&self) -> TokenStream {
        match self {
            Arg::Named { name, value } => quote!(#name = #value),
            Arg::Positional(e) => e.to_token_stream(),
        }
    }
}

/// The arguments after the SQL literal (`rest` starts with its comma).
fn parse_args(input: ParseStream<'_>) -> syn::Result<Vec<Arg>> {
    let mut args = Vec::new();
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        // `name = value`, but not `a == b`; keywords are names too (`type = t` for `:type`).
        let named = input.peek(Ident::peek_any)
            && input.peek2(Token![=])
            && !input.peek2(Token![==])
            && !input.peek2(Token![=>]);
        if named {
            let name = Ident::parse_any(input)?;
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            args.push(Arg::Named { name, value });
        } else {
            args.push(Arg::Positional(input.parse()?));
        }
    }
    Ok(args)
}

/// The arguments to hand to sqlx, in `$n` order, each with its leading comma; `rest` as it is
/// when neither the SQL nor the call uses names.
///
/// # Errors
///
/// Every misuse of named arguments, combined into one error.
pub(crate) fn bind(
    macro_name: &str,
    sql: &Rewritten<'_>,
    rest: TokenStream,
    sql_span: Span,
) -> syn::Result<TokenStream> {
    let args = match Parser::parse2(parse_args, rest.clone()) {
        Ok(args) => args,
        // Not ours to judge: sqlx reports what it cannot parse.
        Err(_) if sql.names.is_empty() => return Ok(rest),
        Err(e) => return Err(e),
    };
    let any_named = args.iter().any(|a| matches!(a, Arg::Named { .. }));
    if sql.names.is_empty() && !any_named {
        return Ok(rest);
    }
    check(macro_name, sql, &args)?;
    let mut out = TokenStream::new();
    for name in &sql.names {
        let given = args.iter().find_map(|a| match a {
            Arg::Named { name: n, value } if n.unraw() == name => Some(value),
            _ => None,
        });
        let value = match given {
            Some(v) => v.to_token_stream(),
            None => captured(macro_name, name, sql_span)?.to_token_stream(),
        };
        out.extend(quote!(, #value));
    }
    Ok(out)
}

/// The variable in scope a name not given as an argument is bound from.
fn captured(macro_name: &str, name: &str, span: Span) -> syn::Result<Ident> {
    // Keywords and `_` cannot name a variable (and `Ident::new` would panic on them).
    match syn::parse_str::<Ident>(name) {
        Ok(_) => Ok(Ident::new(name, span)),
        Err(_) => Err(syn::Error::new(
            span,
            format!(
                "{macro_name}: `:{name}` is not given as an argument, and `{name}` cannot be a variable to take it from (it is a Rust keyword): pass it as {name} = …"
            ),
        )),
    }
}

/// Every misuse of the arguments, combined; `Ok` when there is none.
fn check(macro_name: &str, sql: &Rewritten<'_>, args: &[Arg]) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = Vec::new();
    let mut error = |arg: &Arg, msg: String| {
        errors.push(syn::Error::new_spanned(
            arg.tokens(),
            format!("{macro_name}: {msg}"),
        ))
    };
    let uses = if sql.names.is_empty() {
        "no named parameters".to_string()
    } else {
        format!("named parameters {}", list(&sql.names))
    };
    let mut seen: Vec<String> = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        match arg {
            Arg::Positional(_) if args[..i].iter().any(|a| matches!(a, Arg::Named { .. })) => {
                error(
                    arg,
                    "a positional argument after named ones: with named parameters, every argument is name = value".into(),
                );
            }
            Arg::Positional(_) if !sql.names.is_empty() => error(
                arg,
                format!(
                    "a positional argument in a query with {uses}: pass it as name = value (e.g. {} = …), or leave it out to take the variable of that name",
                    sql.names[0]
                ),
            ),
            Arg::Positional(_) => {}
            Arg::Named { name, .. } => {
                let name = name.unraw().to_string();
                if seen.contains(&name) {
                    error(
                        arg,
                        format!(
                            "the named argument `{name}` is given twice: give each name once (a name the query uses twice binds one value)"
                        ),
                    );
                } else if !sql.names.contains(&name.as_str()) {
                    error(arg, unused(&name, sql, &uses));
                }
                seen.push(name);
            }
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why `name = …` binds nothing, and what to do.
fn unused(name: &str, sql: &Rewritten<'_>, uses: &str) -> String {
    if sql.positional.is_some() {
        return format!(
            "the named argument `{name}` is not used: the query has positional parameters ($1, …), not :name ones; pass the value positionally, or write :{name} in the query (for every parameter) instead of $n"
        );
    }
    if sql.slice_bounds.iter().any(|p| p.name == name) {
        return format!(
            "the named argument `{name}` is not used: inside a subscript `:{name}` is an array slice bound (a[lo:{name}]); write [(:{name})] to use the parameter there"
        );
    }
    format!(
        "the named argument `{name}` is not used: the query has no `:{name}` (it has {uses}); remove the argument or use :{name} in the query"
    )
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!(":{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgdbm_core::named_params::rewrite;

    fn bound(sql: &str, rest: TokenStream) -> Result<String, String> {
        let r = rewrite(sql).unwrap();
        bind("tsql!", &r, rest, Span::call_site())
            .map(|t| t.to_string())
            .map_err(|e| {
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    #[test]
    fn named_arguments_go_in_dollar_order_and_missing_ones_are_captured() {
        let out = bound(
            "SELECT :b, :a, :c, :b",
            quote!(, a = 1 + 1, b = x.y(), r#type = 3),
        );
        // `type` is given but unused here: an error, below. Without it:
        assert!(out.is_err());
        let out = bound("SELECT :b, :a, :c, :b", quote!(, a = 1 + 1, b = x.y(),)).unwrap();
        assert_eq!(out, quote!(, x.y(), 1 + 1, c).to_string());
        let out = bound("SELECT :type", quote!(, type = 3)).unwrap();
        assert_eq!(out, ", 3");
    }

    #[test]
    fn positional_queries_pass_through_untouched() {
        let rest = quote!(, id, "a" as _);
        assert_eq!(
            bound("SELECT $1, $2", rest.clone()).unwrap(),
            rest.to_string()
        );
        // What only sqlx can judge stays sqlx's.
        let odd = quote!(, ;;);
        assert_eq!(bound("SELECT $1", odd.clone()).unwrap(), odd.to_string());
        assert_eq!(bound("SELECT 1", quote!()).unwrap(), "");
        // `a == b` is a positional expression, not a name.
        assert_eq!(bound("SELECT $1", quote!(, a == b)).unwrap(), ", a == b");
    }

    #[test]
    fn every_misuse_is_reported() {
        let e = bound("SELECT :a", quote!(, a = 1, b = 2)).unwrap_err();
        assert!(
            e.contains("the named argument `b` is not used: the query has no `:b` (it has named parameters :a)"),
            "{e}"
        );
        let e = bound("SELECT :a", quote!(, a = 1, a = 2)).unwrap_err();
        assert!(e.contains("`a` is given twice"), "{e}");
        let e = bound("SELECT :a, :b", quote!(, a = 1, 2)).unwrap_err();
        assert!(e.contains("a positional argument after named ones"), "{e}");
        let e = bound("SELECT :a", quote!(, 1)).unwrap_err();
        assert!(
            e.contains("a positional argument in a query with named parameters :a: pass it as name = value (e.g. a = …)"),
            "{e}"
        );
        let e = bound("SELECT $1", quote!(, a = 1)).unwrap_err();
        assert!(
            e.contains("positional parameters ($1, …), not :name ones"),
            "{e}"
        );
        let e = bound("SELECT t[1:i] FROM x", quote!(, i = 1)).unwrap_err();
        assert!(e.contains("write [(:i)]"), "{e}");
        let e = bound("SELECT :self", quote!()).unwrap_err();
        assert!(e.contains("pass it as self = …"), "{e}");
        // All at once.
        let e = bound("SELECT :a", quote!(, b = 1, b = 2, 3)).unwrap_err();
        assert_eq!(e.lines().count(), 3, "{e}");
    }
}
