//! `path_agg(channel, touch_time, touch_id)`: a conversion path as text.
//!
//! The touches of each group in path order — `(touch_time, touch_id)`, SPEC 6.4 — with
//! consecutive repeats of a channel collapsed into `channel xN`, joined by `' > '`:
//! `meta x2 > google > tiktok`. Rows whose channel or time is NULL are not part of a path; a
//! group without any touch gives NULL.
//!
//! The same text can be written in plain SQL (two `row_number()` windows for the runs, then an
//! ordered `array_agg`), and `top_conversion_paths` was: on the 50M-touch world that took
//! 16–19 s, most of it in the ordered `array_agg` (one row-at-a-time accumulator per
//! conversion) and the two windows. This is a [`GroupsAccumulator`]: every touch of every
//! group is appended to one vector, and emitting sorts it once by `(group, time, id)`.
//! For DuckDB the same function is a macro (`queries/benches/reports.py`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Builder, ListArray, ListBuilder, StringBuilder, StringViewArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility};

/// The SQL name.
pub(crate) const NAME: &str = "path_agg";

/// The aggregate function (register with `AggregateUDF::from(PathAgg::new())`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PathAgg {
    signature: Signature,
}

impl PathAgg {
    pub(crate) fn new() -> PathAgg {
        PathAgg { signature: Signature::any(3, Volatility::Immutable) }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null)
}

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..) | DataType::Int64 | DataType::Date32 | DataType::Date64 | DataType::Null)
}

impl AggregateUDFImpl for PathAgg {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [c, t, i] if is_text(c) && is_time(t) && is_text(i) => Ok(DataType::Utf8),
            _ => plan_err!("{NAME}(channel text, touch_time timestamp, touch_id text), not {NAME}({args:?})"),
        }
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Paths::default())))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |part: &str, item: DataType| Arc::new(Field::new_list(format_state_name(args.name, part), Field::new_list_field(item, true), true));
        Ok(vec![list("channels", DataType::Utf8), list("times", DataType::Int64), list("ids", DataType::Utf8)])
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Paths::default()))
    }
}

/// One touch of one group.
#[derive(Debug, Clone, Copy)]
struct Touch {
    group: usize,
    time: i64,
    /// The touch id: `ids[id_start..id_start + id_len]`.
    id_start: usize,
    id_len: usize,
    channel: u32,
}

/// The touches of every group, in arrival order until emitted.
#[derive(Debug, Default)]
struct Paths {
    touches: Vec<Touch>,
    ids: Vec<u8>,
    channels: Vec<String>,
    channel_index: HashMap<String, u32>,
    groups: usize,
}

impl Paths {
    fn push(&mut self, group: usize, channel: &str, time: i64, id: &str) {
        let channel = match self.channel_index.get(channel) {
            Some(&c) => c,
            None => {
                let c = self.channels.len() as u32;
                self.channels.push(channel.to_owned());
                self.channel_index.insert(channel.to_owned(), c);
                c
            }
        };
        let id_start = self.ids.len();
        self.ids.extend_from_slice(id.as_bytes());
        self.touches.push(Touch { group, time, id_start, id_len: id.len(), channel });
    }

    fn id(&self, t: &Touch) -> &[u8] {
        &self.ids[t.id_start..t.id_start + t.id_len]
    }

    fn channel(&self, t: &Touch) -> &str {
        &self.channels[t.channel as usize]
    }

    /// Appends rows of `(channels, times, ids)` arrays, row `r` to group `group_of(r)`.
    fn append(
        &mut self,
        channels: &ArrayRef,
        times: &ArrayRef,
        ids: &ArrayRef,
        mut group_of: impl FnMut(usize) -> usize,
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let channels = cast(channels, &DataType::Utf8View)?;
        let channels = channels.as_string_view();
        let times = cast(times, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let ids = cast(ids, &DataType::Utf8View)?;
        let ids: &StringViewArray = ids.as_string_view();
        for r in 0..channels.len() {
            if filter.is_some_and(|f| !f.is_valid(r) || !f.value(r)) || channels.is_null(r) || times.is_null(r) {
                continue;
            }
            let id = if ids.is_null(r) { "" } else { ids.value(r) };
            self.push(group_of(r), channels.value(r), times.value(r), id);
        }
        Ok(())
    }

    /// Takes the touches of the groups `emit_to` names, sorted by `(group, time, id)`, and how
    /// many groups that is; the groups left are renumbered from 0.
    fn take(&mut self, emit_to: EmitTo) -> (Vec<Touch>, usize) {
        let (mut taken, n) = match emit_to {
            EmitTo::All => (std::mem::take(&mut self.touches), std::mem::take(&mut self.groups)),
            EmitTo::First(n) => {
                let (taken, mut kept): (Vec<Touch>, Vec<Touch>) = self.touches.iter().partition(|t| t.group < n);
                kept.iter_mut().for_each(|t| t.group -= n);
                self.touches = kept;
                self.groups -= n;
                (taken, n)
            }
        };
        taken.sort_unstable_by(|a, b| self.order(a, b));
        (taken, n)
    }

    /// Frees the touch ids once no touch refers to them (the channels are few: kept).
    fn release(&mut self) {
        if self.touches.is_empty() {
            self.ids = Vec::new();
        }
    }

    fn order(&self, a: &Touch, b: &Touch) -> Ordering {
        a.group.cmp(&b.group).then(a.time.cmp(&b.time)).then_with(|| self.id(a).cmp(self.id(b)))
    }

    /// The ranges of `sorted` (by group) that belong to each of `n` groups, in group order.
    fn per_group(sorted: &[Touch], n: usize) -> impl Iterator<Item = &[Touch]> {
        let mut rest = sorted;
        (0..n).map(move |g| {
            let len = rest.iter().take_while(|t| t.group == g).count();
            let (this, next) = rest.split_at(len);
            rest = next;
            this
        })
    }

    fn text(&self, touches: &[Touch], out: &mut String) {
        out.clear();
        let mut i = 0;
        while i < touches.len() {
            let channel = touches[i].channel;
            let run = touches[i..].iter().take_while(|t| t.channel == channel).count();
            if !out.is_empty() {
                out.push_str(" > ");
            }
            out.push_str(self.channel(&touches[i]));
            if run > 1 {
                out.push_str(" x");
                out.push_str(&run.to_string());
            }
            i += run;
        }
    }

    fn evaluate_paths(&mut self, emit_to: EmitTo) -> ArrayRef {
        let (sorted, n) = self.take(emit_to);
        let mut out = StringBuilder::with_capacity(n, n * 16);
        let mut text = String::new();
        for touches in Paths::per_group(&sorted, n) {
            if touches.is_empty() {
                out.append_null();
            } else {
                self.text(touches, &mut text);
                out.append_value(&text);
            }
        }
        self.release();
        Arc::new(out.finish())
    }

    fn state_lists(&mut self, emit_to: EmitTo) -> Vec<ArrayRef> {
        let (sorted, n) = self.take(emit_to);
        let mut channels = ListBuilder::new(StringBuilder::new());
        let mut times = ListBuilder::new(Int64Builder::new());
        let mut ids = ListBuilder::new(StringBuilder::new());
        for touches in Paths::per_group(&sorted, n) {
            for t in touches {
                channels.values().append_value(self.channel(t));
                times.values().append_value(t.time);
                ids.values().append_value(String::from_utf8_lossy(self.id(t)));
            }
            channels.append(true);
            times.append(true);
            ids.append(true);
        }
        self.release();
        vec![Arc::new(channels.finish()), Arc::new(times.finish()), Arc::new(ids.finish())]
    }

    fn merge_lists(&mut self, states: &[ArrayRef], mut group_of: impl FnMut(usize) -> usize) -> Result<()> {
        let lists: Vec<&ListArray> = states.iter().map(|s| s.as_list::<i32>()).collect();
        let [channels, times, ids] = lists[..] else { return plan_err!("{NAME}: a state has three lists") };
        // The three lists of a state have the same lengths; the arrays may be slices of larger
        // ones, so their values are taken from the first offset on.
        let offsets = channels.value_offsets();
        let (first, last) = (offsets[0] as usize, offsets[channels.len()] as usize);
        let values = |l: &ListArray| l.values().slice(first, last - first);
        let mut groups = Vec::with_capacity(last - first);
        for row in 0..channels.len() {
            let g = group_of(row);
            groups.extend((offsets[row]..offsets[row + 1]).map(|_| g));
        }
        self.append(&values(channels), &values(times), &values(ids), |r| groups[r], None)
    }

    fn size(&self) -> usize {
        self.touches.capacity() * size_of::<Touch>() + self.ids.capacity() + self.channels.iter().map(|c| 2 * c.len() + 64).sum::<usize>()
    }
}

impl GroupsAccumulator for Paths {
    fn update_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], opt_filter: Option<&BooleanArray>, total_num_groups: usize) -> Result<()> {
        self.groups = self.groups.max(total_num_groups);
        self.append(&values[0], &values[1], &values[2], |r| group_indices[r], opt_filter)
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.evaluate_paths(emit_to))
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(self.state_lists(emit_to))
    }
    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.groups = self.groups.max(total_num_groups);
        self.merge_lists(values, |r| group_indices[r])
    }
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        // Each row its own group.
        let mut one = Paths { groups: values[0].len(), ..Paths::default() };
        one.append(&values[0], &values[1], &values[2], |r| r, opt_filter)?;
        Ok(one.state_lists(EmitTo::All))
    }
    fn size(&self) -> usize {
        Paths::size(self)
    }
}

/// The accumulator without `GROUP BY`: one group.
#[derive(Debug)]
struct OneGroup(Paths);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.groups = 1;
        self.0.append(&values[0], &values[1], &values[2], |_| 0, None)
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.groups = 1;
        ScalarValue::try_from_array(&self.0.evaluate_paths(EmitTo::All), 0)
    }
    fn size(&self) -> usize {
        size_of::<Self>() + self.0.size()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.groups = 1;
        self.0.state_lists(EmitTo::All).iter().map(|a| ScalarValue::try_from_array(a, 0)).collect()
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.groups = 1;
        self.0.merge_lists(states, |_| 0)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    const TOUCHES: &str = "(values (1, 'meta', 3, 'z'), (1, 'google', 1, 'x'), (1, 'meta', 2, 'y'), (1, 'meta', 2, 'w'), \
        (2, 'tiktok', 1, 'q'), (3, 'meta', 1, 'a'), (3, 'meta', 2, 'b'), (3, 'snap', 3, 'c'), (3, 'meta', 4, 'd'), \
        (4, null, 1, 'n'), (5, 'snap', 1, null))";

    /// The `p` column of `sql`'s result.
    async fn paths(sql: &str, partitions: usize) -> Vec<Option<String>> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions).with_batch_size(2));
        ctx.register_udaf(AggregateUDF::from(PathAgg::new()));
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for b in &batches {
            let p = cast(b.column_by_name("p").unwrap(), &DataType::Utf8).unwrap();
            out.extend(p.as_string::<i32>().iter().map(|v| v.map(str::to_owned)));
        }
        out
    }

    #[tokio::test]
    async fn paths_are_in_time_then_id_order_with_runs_collapsed() {
        // Small batches over several partitions: partial states are merged across batches.
        for partitions in [1, 3] {
            let sql = format!("select g, path_agg(ch, to_timestamp_seconds(t), id) as p from {TOUCHES} v(g, ch, t, id) group by g order by g");
            let expected = [Some("google > meta x3"), Some("tiktok"), Some("meta x2 > snap > meta"), None, Some("snap")];
            assert_eq!(paths(&sql, partitions).await, expected.map(|p| p.map(str::to_owned)), "{partitions} partitions");
        }
    }

    #[tokio::test]
    async fn without_group_by_one_path() {
        let got = paths(&format!("select path_agg(ch, t, id) as p from {TOUCHES} v(g, ch, t, id) where g = 3"), 2).await;
        assert_eq!(got, vec![Some("meta x2 > snap > meta".to_owned())]);
    }

    #[tokio::test]
    async fn wrong_argument_types_are_a_plan_error() {
        let ctx = SessionContext::new();
        ctx.register_udaf(AggregateUDF::from(PathAgg::new()));
        let err = ctx.sql("select path_agg(1, 'x', 2)").await.unwrap_err().to_string();
        assert!(err.contains("path_agg(channel text, touch_time timestamp, touch_id text)"), "{err}");
    }
}
