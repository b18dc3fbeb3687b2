//! SQL functions Tally adds to every session.
//!
//! - `hex_id(id)`: a stored identifier (`FixedSizeBinary(32)`, or `Binary` on the Postgres
//!   endpoint) as 64 lowercase hex characters, for display, joins with exported files and
//!   `count(distinct …)` in tools that cannot handle binary. NULL stays NULL.
//! - `safe_div(a, b)`: `a / b` as a double, NULL when `b` is 0 or either side is NULL — CPA and
//!   ROAS without a division-by-zero error or an infinity on a day without spend.
//! - `path_agg(channel, touch_time, touch_id)` (aggregate): a conversion path as text, see
//!   [`crate::path_agg`].
//! - `current_advertiser()`: the advertiser the session is bound to (NULL for the operator's
//!   session). The catalog's views take their `advertiser_id` column from it (see
//!   [`crate::catalog`] for why it is not a literal).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{AggregateUDF, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use tally_core::schema::ID_WIDTH;

/// Registers Tally's functions on `ctx`, for a session bound to `advertiser` (if any).
pub(crate) fn register(ctx: &SessionContext, advertiser: Option<&str>) {
    ctx.register_udf(ScalarUDF::from(HexId::new()));
    ctx.register_udf(current_advertiser(advertiser));
    ctx.register_udaf(AggregateUDF::from(crate::path_agg::PathAgg::new()));
    ctx.register_udf(create_udf("safe_div", vec![DataType::Float64, DataType::Float64], DataType::Float64, Volatility::Immutable, Arc::new(safe_div)));
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
    if scalar { Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)) } else { Ok(ColumnarValue::Array(out)) }
}

/// `current_advertiser()`: the bound advertiser's id, as a function the planner cannot fold.
///
/// Declared volatile so that the optimizer neither folds it into a literal nor treats the
/// column as a constant: with a literal `advertiser_id`, DataFusion 55 sees every grouping
/// on it as already sorted and switches to its streaming (row-at-a-time) group table, which
/// made `group by advertiser_id, conversion_key` over 1.3M rows take 1.07 s instead of 0.66 s
/// (and the `path_length_distribution` report 1.6× as long).
///
/// A `Utf8View`: an id of up to 12 bytes is then inline in each view, and grouping or joining
/// on it compares 16-byte views instead of string bytes (`channel_performance`, which groups
/// 9M rows by advertiser, channel and model, spent a fifth of its time comparing "acme" as Utf8).
fn current_advertiser(advertiser: Option<&str>) -> ScalarUDF {
    let value = ScalarValue::Utf8View(advertiser.map(str::to_owned));
    create_udf(
        CURRENT_ADVERTISER,
        vec![],
        DataType::Utf8View,
        Volatility::Volatile,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

/// The name of [`current_advertiser`].
pub(crate) const CURRENT_ADVERTISER: &str = "current_advertiser";

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
        if scalar { Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)) } else { Ok(ColumnarValue::Array(out)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        register(&ctx, Some("acme"));
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
        register(&ctx, None);
        assert!(ctx.sql("select hex_id('text')").await.is_err(), "strings are not identifiers");
    }

    #[tokio::test]
    async fn current_advertiser_is_the_bound_one_and_never_a_constant() {
        let text = one("select current_advertiser() as a").await;
        assert!(text.contains("| acme |"), "{text}");
        let ctx = SessionContext::new();
        register(&ctx, Some("acme"));
        // Not folded into a literal by the logical optimizer.
        let plan = ctx.sql("select current_advertiser() as a").await.unwrap().into_optimized_plan().unwrap();
        assert!(plan.display_indent().to_string().contains("current_advertiser()"), "{}", plan.display_indent());
        let ctx = SessionContext::new();
        register(&ctx, None);
        let batches = ctx.sql("select current_advertiser() is null as n").await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("| true |"), "{text}");
    }
}
