//! SQL functions Tally adds to every session.
//!
//! - `hex_id(id)`: a stored identifier (`FixedSizeBinary(32)`, or `Binary` on the Postgres
//!   endpoint) as 64 lowercase hex characters, for display, joins with exported files and
//!   `count(distinct …)` in tools that cannot handle binary. NULL stays NULL.
//! - `safe_div(a, b)`: `a / b` as a double, NULL when `b` is 0 or either side is NULL — CPA and
//!   ROAS without a division-by-zero error or an infinity on a day without spend.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use tally_core::schema::ID_WIDTH;

/// Registers Tally's functions on `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(HexId::new()));
    ctx.register_udf(create_udf(
        "safe_div",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(safe_div),
    ));
}

fn safe_div(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let (a, b) = (arrays[0].as_primitive::<Float64Type>(), arrays[1].as_primitive::<Float64Type>());
    let out: Float64Array = a
        .iter()
        .zip(b.iter())
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        })
        .collect();
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let out: ArrayRef = Arc::new(out);
    if scalar {
        Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HexId {
    signature: Signature,
}

impl HexId {
    fn new() -> HexId {
        let types = [DataType::FixedSizeBinary(ID_WIDTH), DataType::Binary, DataType::LargeBinary, DataType::BinaryView];
        let signature = Signature::one_of(types.into_iter().map(|t| TypeSignature::Exact(vec![t])).collect(), Volatility::Immutable);
        HexId { signature }
    }
}

impl ScalarUDFImpl for HexId {
    fn name(&self) -> &str {
        "hex_id"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let array = args.args[0].to_array(args.number_rows)?;
        let mut out = StringBuilder::with_capacity(array.len(), array.len() * 64);
        macro_rules! encode {
            ($a:expr) => {
                for v in $a.iter() {
                    match v {
                        Some(bytes) => out.append_value(hex::encode(bytes)),
                        None => out.append_null(),
                    }
                }
            };
        }
        match array.data_type() {
            DataType::FixedSizeBinary(_) => encode!(array.as_fixed_size_binary()),
            DataType::Binary => encode!(array.as_binary::<i32>()),
            DataType::LargeBinary => encode!(array.as_binary::<i64>()),
            DataType::BinaryView => encode!(array.as_binary_view()),
            other => return exec_err!("hex_id takes an identifier column, not {other}"),
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn safe_div_is_null_on_zero_and_null() {
        let text = one("select safe_div(6, 3) as a, safe_div(1, 0) as b, safe_div(null, 2) as c, safe_div(1.5, 0.5) as d").await;
        assert!(text.contains("| 2.0 |   |   | 3.0 |"), "{text}");
    }

    #[tokio::test]
    async fn hex_id_encodes_binary_and_keeps_null() {
        let text = one("select hex_id(arrow_cast(X'00ff10', 'Binary')) as h, hex_id(arrow_cast(null, 'Binary')) as n").await;
        assert!(text.contains("| 00ff10 |   |"), "{text}");
        let ctx = SessionContext::new();
        register(&ctx);
        assert!(ctx.sql("select hex_id('text')").await.is_err(), "strings are not identifiers");
    }
}
