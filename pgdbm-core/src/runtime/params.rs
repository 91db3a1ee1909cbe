//! Query arguments as tuples: `()`, `(a,)`, `(a, b)`, … up to 16 values of any type sqlx can
//! bind. The same tuples are COPY rows.

use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, Postgres};
use sqlx::{Arguments, Type, TypeInfo};

/// Values bound to `$1, $2, …`, in order. Implemented for tuples of up to 16 elements whose
/// types sqlx can encode for PostgreSQL, and for `PgArguments`.
///
/// ```
/// # use pgdbm_core::Params;
/// fn takes<P: Params>(_: P) {}
/// takes(());
/// takes((1_i64,));
/// takes(("alice@example.com", Some("Alice"), 42_i32));
/// ```
pub trait Params: Send {
    /// Number of values.
    fn len(&self) -> usize;
    /// `true` for `()`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Encodes the values into sqlx arguments.
    ///
    /// # Errors
    ///
    /// The error of sqlx's encoder for a value it cannot encode (the query methods report it as
    /// [`Error::Query`](crate::Error::Query), before anything is sent).
    fn into_arguments(self) -> Result<PgArguments, BoxDynError>;
    /// The PostgreSQL type of each value (`TEXT`, `INT8`, …), `?` where it is not known: what
    /// the query statistics keep instead of the values.
    fn type_names(&self) -> Vec<String> {
        vec!["?".to_string(); self.len()]
    }
}

/// A row for [`Database::copy_in`](crate::Database::copy_in): a tuple of values written in
/// PostgreSQL's binary COPY format, through sqlx's own encoders.
///
/// Values of built-in types are supported; user-defined enums, composites and arrays of them need
/// an OID lookup that COPY cannot do, so insert those with a query instead.
pub trait CopyRow: Send {
    /// Number of columns.
    fn width(&self) -> usize;
    /// Appends this row in binary COPY format.
    ///
    /// # Errors
    ///
    /// The error of sqlx's encoder for a value it cannot encode; `copy_in` then aborts the COPY and
    /// returns [`Error::Query`](crate::Error::Query).
    fn write_binary(&self, out: &mut Vec<u8>) -> Result<(), BoxDynError>;
}

impl Params for PgArguments {
    fn len(&self) -> usize {
        Arguments::len(self)
    }
    fn into_arguments(self) -> Result<PgArguments, BoxDynError> {
        Ok(self)
    }
}

impl Params for () {
    fn len(&self) -> usize {
        0
    }
    fn into_arguments(self) -> Result<PgArguments, BoxDynError> {
        Ok(PgArguments::default())
    }
}

fn write_value<T>(value: &T, out: &mut Vec<u8>) -> Result<(), BoxDynError>
where
    T: for<'q> Encode<'q, Postgres>,
{
    let mut buf = PgArgumentBuffer::default();
    match value.encode_by_ref(&mut buf)? {
        IsNull::Yes => out.extend_from_slice(&(-1_i32).to_be_bytes()),
        IsNull::No => {
            let len = i32::try_from(buf.len()).map_err(|_| "value larger than 2 GiB")?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&buf);
        }
    }
    Ok(())
}

macro_rules! tuple_impls {
    ($( ($($T:ident $idx:tt),+) = $n:expr ;)+) => {$(
        impl<$($T),+> Params for ($($T,)+)
        where
            $($T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,)+
        {
            fn len(&self) -> usize { $n }
            fn into_arguments(self) -> Result<PgArguments, BoxDynError> {
                let mut args = PgArguments::default();
                $( args.add(self.$idx)?; )+
                Ok(args)
            }
            fn type_names(&self) -> Vec<String> {
                vec![$( TypeInfo::name(&<$T as Type<Postgres>>::type_info()).to_string() ),+]
            }
        }

        impl<$($T),+> CopyRow for ($($T,)+)
        where
            $($T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,)+
        {
            fn width(&self) -> usize { $n }
            fn write_binary(&self, out: &mut Vec<u8>) -> Result<(), BoxDynError> {
                out.extend_from_slice(&($n as i16).to_be_bytes());
                $( write_value(&self.$idx, out)?; )+
                Ok(())
            }
        }
    )+};
}

tuple_impls! {
    (A 0) = 1;
    (A 0, B 1) = 2;
    (A 0, B 1, C 2) = 3;
    (A 0, B 1, C 2, D 3) = 4;
    (A 0, B 1, C 2, D 3, E 4) = 5;
    (A 0, B 1, C 2, D 3, E 4, F 5) = 6;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6) = 7;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7) = 8;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8) = 9;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9) = 10;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10) = 11;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11) = 12;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12) = 13;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13) = 14;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14) = 15;
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15) = 16;
}
