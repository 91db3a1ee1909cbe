//! Channel names, rendered per handle: `jobs_{{schema}}` on a handle of schema `acme` is the
//! channel `jobs_acme`, so two tenants' workers, each on its own handle, never wake each other.
//!
//! Why a channel is an identifier: LISTEN takes an identifier, and `pg_notify` a string that
//! must equal it. pgdbm quotes the name in LISTEN and passes it unchanged to `pg_notify`, and
//! accepts only names that need no quoting (`crate::ident`'s rule), so the name written, the
//! name listened to and the name notified are always the same text.

use crate::ident::{IdentifierKind, InvalidIdentifier, validate_identifier};
use crate::runtime::error::{Error, Result};
use crate::template::{Target, placeholders};

/// Renders `channel` for a handle of `schema`: `{{schema}}` becomes the schema's name (`public`
/// without one), and the result must be a valid identifier.
///
/// # Errors
///
/// [`Error::Template`] for a malformed placeholder, [`Error::InvalidInput`] for a
/// `{{tables.x}}` placeholder (a channel is not a table), and [`Error::Identifier`] (kind
/// `Channel`) when the rendered name is not an identifier of at most 63 bytes.
pub(crate) fn render_channel(channel: &str, schema: Option<&str>) -> Result<String> {
    let found = placeholders(channel)?;
    let mut out = String::with_capacity(channel.len() + 16);
    let mut at = 0;
    for p in &found {
        out.push_str(&channel[at..p.start]);
        match p.target {
            Target::Schema => out.push_str(schema.unwrap_or("public")),
            Target::Table { .. } => {
                return Err(Error::InvalidInput {
                    operation: "listen",
                    message: format!(
                        "channel `{channel}`: `{}` is a table placeholder; a channel name may hold only {{{{schema}}}}",
                        p.text
                    ),
                });
            }
        }
        at = p.end;
    }
    out.push_str(&channel[at..]);
    validate_identifier(&out, IdentifierKind::Channel).map_err(|e| {
        Error::Identifier(InvalidIdentifier {
            name: if out == channel {
                out.clone()
            } else {
                format!("{out}` (rendered from `{channel}`")
            },
            ..e
        })
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_placeholders_render_per_handle() {
        assert_eq!(
            render_channel("jobs_{{schema}}", Some("acme")).unwrap(),
            "jobs_acme"
        );
        assert_eq!(
            render_channel("jobs_{{schema}}", None).unwrap(),
            "jobs_public"
        );
        assert_eq!(render_channel("Jobs", Some("acme")).unwrap(), "Jobs");
    }

    #[test]
    fn bad_names_are_identifier_errors() {
        for bad in [
            "",
            "jobs-1",
            "1jobs",
            "jobs done",
            "jobs\"",
            &"x".repeat(64),
        ] {
            let e = render_channel(bad, None).unwrap_err();
            assert!(
                matches!(&e, Error::Identifier(i) if i.kind == IdentifierKind::Channel),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("invalid channel name"), "{e}");
        }
        // Too long once rendered: the message shows both.
        let e = render_channel("jobs_for_the_tenant_{{schema}}", Some(&"t".repeat(50)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rendered from `jobs_for_the_tenant_{{schema}}`"),
            "{e}"
        );
    }

    #[test]
    fn table_and_malformed_placeholders_are_refused() {
        let e = render_channel("{{tables.jobs}}", Some("s")).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        let e = render_channel("jobs_{{schem}}", Some("s")).unwrap_err();
        assert!(matches!(e, Error::Template(_)), "{e}");
    }
}
