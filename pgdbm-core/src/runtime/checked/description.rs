//! What a statement returns and takes, in the form sqlx records it in `.sqlx/` (so a recorded
//! description and a live one compare field by field).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sqlx::TypeInfo;
use sqlx::postgres::{PgTypeInfo, Postgres};

/// A column or parameter type.
///
/// It is kept as the JSON value sqlx writes for the type in `.sqlx/` (`"Int8"` for a built-in
/// type, `{"Custom": {"name": …, "kind": …}}` for an enum, domain, composite or other
/// user-defined type), because that is what the recorded side has, and because sqlx's own
/// comparison of [`PgTypeInfo`]s goes by OID, which the recorded form does not keep. Two types
/// are equal when their JSON is: a user-defined type is equal when its name and its definition
/// (an enum's labels, a domain's base type) are.
#[derive(Clone, Debug)]
pub struct SqlType {
    name: String,
    repr: Value,
}

impl SqlType {
    /// A type from the JSON sqlx records for it in `.sqlx/` (the value of a `type_info` or of a
    /// parameter). Any value is accepted: one sqlx cannot read gets a name from its text.
    pub fn from_json(repr: Value) -> SqlType {
        let name = match serde_json::from_value::<PgTypeInfo>(repr.clone()) {
            Ok(t) => display_name(&t, repr.is_string()),
            Err(_) => match &repr {
                Value::String(s) => s.to_ascii_lowercase(),
                other => other
                    .pointer("/Custom/name")
                    .and_then(Value::as_str)
                    .map_or_else(|| other.to_string(), str::to_string),
            },
        };
        SqlType { name, repr }
    }

    /// The type of a live description, as sqlx would record it.
    pub fn from_type_info(t: &PgTypeInfo) -> SqlType {
        // Serialising a type sqlx describes cannot fail (plain enums, strings and lists); the
        // display name stands in should a future sqlx add something that can.
        let repr = serde_json::to_value(t).unwrap_or_else(|_| Value::String(t.name().into()));
        SqlType {
            name: display_name(t, repr.is_string()),
            repr,
        }
    }

    /// The name to show: PostgreSQL's, lower case for built-in types (`int8`, `text[]`,
    /// `timestamptz`), as created for user-defined ones.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON form sqlx records in `.sqlx/`.
    pub fn as_json(&self) -> &Value {
        &self.repr
    }
}

/// sqlx's name for `t` (`INT8`, `TEXT[]`, or the user-defined type's own), built-in names in
/// lower case as psql shows them.
fn display_name(t: &PgTypeInfo, builtin: bool) -> String {
    if builtin {
        t.name().to_ascii_lowercase()
    } else {
        t.name().to_string()
    }
}

impl PartialEq for SqlType {
    fn eq(&self, other: &SqlType) -> bool {
        self.repr == other.repr
    }
}

impl std::fmt::Display for SqlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for SqlType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SqlType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SqlType, D::Error> {
        Value::deserialize(d).map(SqlType::from_json)
    }
}

/// One result column: its name and type (its nullability is in
/// [`Description::nullable`], as sqlx keeps it).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Column {
    /// The column's name as the statement returns it (`email`, `count`, `"n!"`'s `n!`).
    pub name: String,
    /// Its type.
    pub type_info: SqlType,
}

impl Column {
    /// A column named `name` of type `type_info`.
    pub fn new(name: impl Into<String>, type_info: SqlType) -> Column {
        Column {
            name: name.into(),
            type_info,
        }
    }
}

/// What a statement returns and takes: sqlx's `Describe`, reduced to what compiled code relies
/// on. It (de)serialises in the form of the `describe` object of a `.sqlx/query-<hash>.json`
/// file (columns' `ordinal` and `origin` are written and ignored when read).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Description {
    /// The result columns, in order (empty for a statement that returns no rows).
    pub columns: Vec<Column>,
    /// The parameter types `$1`, `$2`, …; `None` when unknown (sqlx recorded only a count).
    pub parameters: Option<Vec<SqlType>>,
    /// Per column: `Some(true)` nullable, `Some(false)` NOT NULL, `None` unknown (an
    /// expression sqlx could not infer).
    pub nullable: Vec<Option<bool>>,
}

impl Description {
    /// A description from its parts.
    pub fn new(
        columns: Vec<Column>,
        parameters: Option<Vec<SqlType>>,
        nullable: Vec<Option<bool>>,
    ) -> Description {
        Description {
            columns,
            parameters,
            nullable,
        }
    }

    /// The description sqlx's `Executor::describe` returned.
    pub(crate) fn from_sqlx(d: &sqlx::Describe<Postgres>) -> Description {
        use sqlx::Column as _;
        Description {
            columns: d
                .columns
                .iter()
                .map(|c| Column::new(c.name(), SqlType::from_type_info(c.type_info())))
                .collect(),
            parameters: match &d.parameters {
                Some(either::Either::Left(types)) => {
                    Some(types.iter().map(SqlType::from_type_info).collect())
                }
                _ => None,
            },
            nullable: d.nullable.clone(),
        }
    }

    /// Whether column `index` (from 0) is known to be nullable (`Some(true)`), known to be NOT
    /// NULL (`Some(false)`), or not known.
    pub fn is_nullable(&self, index: usize) -> Option<bool> {
        self.nullable.get(index).copied().flatten()
    }
}

/// The `describe` object as sqlx writes it.
#[derive(Serialize, Deserialize)]
struct RawDescribe {
    columns: Vec<RawColumn>,
    parameters: Option<RawParameters>,
    nullable: Vec<Option<bool>>,
}

#[derive(Serialize, Deserialize)]
struct RawColumn {
    #[serde(default)]
    ordinal: usize,
    name: String,
    type_info: SqlType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Value>,
}

/// sqlx's `Either<Vec<TypeInfo>, usize>`: the types, or (drivers that know no more) a count.
#[derive(Serialize, Deserialize)]
enum RawParameters {
    Left(Vec<SqlType>),
    Right(usize),
}

impl Serialize for Description {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawDescribe {
            columns: self
                .columns
                .iter()
                .enumerate()
                .map(|(ordinal, c)| RawColumn {
                    ordinal,
                    name: c.name.clone(),
                    type_info: c.type_info.clone(),
                    origin: None,
                })
                .collect(),
            parameters: self.parameters.clone().map(RawParameters::Left),
            nullable: self.nullable.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Description {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Description, D::Error> {
        let raw = RawDescribe::deserialize(d)?;
        Ok(Description {
            columns: raw
                .columns
                .into_iter()
                .map(|c| Column::new(c.name, c.type_info))
                .collect(),
            parameters: match raw.parameters {
                Some(RawParameters::Left(types)) => Some(types),
                Some(RawParameters::Right(_)) | None => None,
            },
            nullable: raw.nullable,
        })
    }
}
