//! SQL that `tsql!` rendered at compile time, marked with the schema it was rendered for.
//!
//! `tsql!` checks a query against one schema's tables, but a multi-tenant service runs it on many
//! schemas. So the macros put a marker comment in front of the SQL they hand to sqlx, naming the
//! schema and the byte offsets where that schema was written for a `{{tables.x}}` placeholder:
//!
//! ```text
//! /* pgdbm: schema=myservice at=14 */ SELECT id FROM "myservice".users WHERE id = $1
//! ```
//!
//! At run time a handle of the same schema runs it as is, a tenant handle of that module
//! splices its own schema in at those offsets ([`Marked::retarget`]), and any other handle
//! refuses it, so a query never silently reads the compile-time schema's rows. Tables named
//! with an explicit schema (`{{tables.shared.countries}}`) are not slots and keep their schema.

use crate::ident::quote_identifier;
use crate::template::{TemplateError, render_with_schema_slots};

const OPEN: &str = "/* pgdbm: schema=";
const AT: &str = " at=";
const CLOSE: &str = " */ ";

/// Renders `template` for `schema` and puts the marker in front.
///
/// ```
/// let sql = pgdbm_core::compiled::render_marked("SELECT * FROM {{tables.users}}", "app").unwrap();
/// assert_eq!(sql, r#"/* pgdbm: schema=app at=14 */ SELECT * FROM "app".users"#);
/// ```
///
/// # Errors
///
/// [`TemplateError`] when `schema` is not a valid identifier or a placeholder in `template` is
/// malformed, as [`render_with_schema_slots`] reports it.
pub fn render_marked(template: &str, schema: &str) -> Result<String, TemplateError> {
    let (body, slots) = render_with_schema_slots(template, schema)?;
    let at: Vec<String> = slots.iter().map(usize::to_string).collect();
    Ok(format!("{OPEN}{schema}{AT}{}{CLOSE}{body}", at.join(",")))
}

/// A marked SQL text, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked<'a> {
    /// The schema the SQL was rendered (and checked) for.
    pub schema: &'a str,
    slots: Vec<usize>,
    /// The SQL after the marker.
    pub body: &'a str,
}

/// The marker of `sql`, if it starts with one that is well formed.
pub fn parse(sql: &str) -> Option<Marked<'_>> {
    let rest = sql.strip_prefix(OPEN)?;
    let (head, body) = rest.split_once(CLOSE)?;
    let (schema, at) = head.split_once(AT)?;
    let slots = if at.is_empty() {
        Vec::new()
    } else {
        at.split(',')
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<usize>>>()?
    };
    let quoted = quote_identifier(schema);
    // Every slot must hold the quoted schema: otherwise the text was edited, and splicing would
    // corrupt it.
    let fits = slots
        .iter()
        .all(|&i| body.get(i..i + quoted.len()) == Some(quoted.as_str()));
    fits.then_some(Marked {
        schema,
        slots,
        body,
    })
}

/// The schema named by the marker of `sql`, without checking the rest (cheap; for the common
/// case of a query run on a handle of the schema it was checked for).
#[inline]
pub fn marked_schema(sql: &str) -> Option<&str> {
    let rest = sql.strip_prefix(OPEN)?;
    let end = rest.find(AT)?;
    Some(&rest[..end])
}

/// Whether `sql` starts like a marked text (cheap; [`parse`] decides).
#[inline]
pub fn is_marked(sql: &str) -> bool {
    sql.starts_with(OPEN)
}

impl Marked<'_> {
    /// The SQL with `schema` in place of the compile-time schema at every slot, marked for
    /// `schema` (so logs and `pg_stat_statements` show which schema ran).
    ///
    /// ```
    /// use pgdbm_core::compiled::{parse, render_marked};
    /// let sql = render_marked("SELECT * FROM {{tables.users}} JOIN {{tables.shared.countries}} USING (cc)", "app").unwrap();
    /// assert_eq!(
    ///     parse(&sql).unwrap().retarget("tenant_acme"),
    ///     r#"/* pgdbm: schema=tenant_acme at=14 */ SELECT * FROM "tenant_acme".users JOIN "shared".countries USING (cc)"#
    /// );
    /// ```
    pub fn retarget(&self, schema: &str) -> String {
        let old = quote_identifier(self.schema).len();
        let new = quote_identifier(schema);
        let mut body = String::with_capacity(self.body.len() + self.slots.len() * new.len());
        let mut at = Vec::with_capacity(self.slots.len());
        let mut copied = 0;
        for &slot in &self.slots {
            body.push_str(&self.body[copied..slot]);
            at.push(body.len().to_string());
            body.push_str(&new);
            copied = slot + old;
        }
        body.push_str(&self.body[copied..]);
        format!("{OPEN}{schema}{AT}{}{CLOSE}{body}", at.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_every_default_schema_slot_and_only_those() {
        let sql = render_marked(
            "SELECT u.id FROM {{tables.users}} u JOIN <<tables.posts>> p ON p.uid = u.id JOIN {{tables.ref.cc}} c ON true WHERE {{schema}} IS NOT NULL",
            "svc",
        )
        .unwrap();
        let m = parse(&sql).unwrap();
        assert_eq!(m.schema, "svc");
        assert_eq!(m.slots.len(), 3);
        let t = m.retarget("tenant_42");
        assert_eq!(
            parse(&t).unwrap().body,
            r#"SELECT u.id FROM "tenant_42".users u JOIN "tenant_42".posts p ON p.uid = u.id JOIN "ref".cc c ON true WHERE "tenant_42" IS NOT NULL"#
        );
        // Retargeting back gives the original.
        assert_eq!(parse(&t).unwrap().retarget("svc"), sql);
    }

    #[test]
    fn a_query_without_placeholders_is_marked_with_no_slots() {
        let sql = render_marked("SELECT 1", "svc").unwrap();
        assert_eq!(sql, "/* pgdbm: schema=svc at= */ SELECT 1");
        assert_eq!(
            parse(&sql).unwrap().retarget("t"),
            "/* pgdbm: schema=t at= */ SELECT 1"
        );
    }

    #[test]
    fn unmarked_or_edited_text_is_not_marked() {
        assert!(parse("SELECT 1").is_none());
        assert!(parse("/* pgdbm: schema=svc at=14 */ SELECT * FROM users").is_none());
        assert!(parse("/* pgdbm: schema=svc at=x */ SELECT 1").is_none());
        assert!(parse("/* pgdbm: schema=svc */ SELECT 1").is_none());
    }
}
