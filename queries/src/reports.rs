//! Saved reports: `.sql` files under `queries/reports/`, compiled into the binary.
//!
//! A report file opens with a header of `--` comment lines:
//! ```sql
//! -- title: One line saying what the report shows
//! -- param: NAME TYPE DEFAULT description   (TYPE is date, text or int)
//! ```
//! and its query refers to parameters by name (`$from`). Values are bound as typed literals
//! (DataFusion named placeholders), never spliced into the text, and the query runs through the
//! same guard and tenant-bound session as any other SQL.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::NaiveDate;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::Error;

/// The report files, by name.
const SOURCES: [(&str, &str); 6] = [
    ("campaign_roas", include_str!("../reports/campaign_roas.sql")),
    ("channel_performance", include_str!("../reports/channel_performance.sql")),
    ("daily_conversions_by_source", include_str!("../reports/daily_conversions_by_source.sql")),
    ("match_quality", include_str!("../reports/match_quality.sql")),
    ("path_length_distribution", include_str!("../reports/path_length_distribution.sql")),
    ("top_conversion_paths", include_str!("../reports/top_conversion_paths.sql")),
];

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `YYYY-MM-DD`.
    Date,
    /// Any text.
    Text,
    /// A whole number.
    Int,
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name, as in `$name`.
    pub name: String,
    /// Type.
    pub kind: ParamType,
    /// Default value, as text.
    pub default: String,
    /// What it means.
    pub description: String,
}

/// A saved report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Name (the file's stem).
    pub name: &'static str,
    /// One line.
    pub title: String,
    /// Declared parameters.
    pub params: Vec<Param>,
    /// The file's text.
    pub sql: &'static str,
}

static REPORTS: LazyLock<Vec<Report>> = LazyLock::new(|| {
    SOURCES.iter().map(|(name, sql)| parse(name, sql).unwrap_or_else(|e| panic!("report `{name}`: {e}"))).collect()
});

/// Every saved report, by name.
pub fn all() -> &'static [Report] {
    &REPORTS
}

/// The report called `name`.
pub fn find(name: &str) -> Result<&'static Report, Error> {
    all().iter().find(|r| r.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|r| r.name).collect();
        Error::Report(format!("no report `{name}`; the reports are: {}", names.join(", ")))
    })
}

fn parse(name: &'static str, sql: &'static str) -> Result<Report, String> {
    let mut title = None;
    let mut params = Vec::new();
    for line in sql.lines().take_while(|l| l.starts_with("--")) {
        let line = line.trim_start_matches("--").trim();
        if let Some(t) = line.strip_prefix("title:") {
            title = Some(t.trim().to_owned());
        } else if let Some(p) = line.strip_prefix("param:") {
            let mut parts = p.trim().splitn(4, ' ');
            let (Some(pname), Some(kind), Some(default)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("bad param line `{line}`"));
            };
            let kind = match kind {
                "date" => ParamType::Date,
                "text" => ParamType::Text,
                "int" => ParamType::Int,
                other => return Err(format!("unknown param type `{other}`")),
            };
            let param = Param { name: pname.to_owned(), kind, default: default.to_owned(), description: parts.next().unwrap_or("").to_owned() };
            value(&param, &param.default)?;
            params.push(param);
        }
    }
    Ok(Report { name, title: title.ok_or("no `-- title:` line")?, params, sql })
}

fn value(param: &Param, text: &str) -> Result<ScalarValue, String> {
    match param.kind {
        ParamType::Date => {
            let d = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| format!("parameter `{}` must be a date (YYYY-MM-DD), not `{}`", param.name, text.escape_debug()))?;
            Ok(ScalarValue::Date32(Some(tally_core::store::date_to_day(d))))
        }
        ParamType::Text => Ok(ScalarValue::Utf8(Some(text.to_owned()))),
        ParamType::Int => text
            .parse::<i64>()
            .map(|n| ScalarValue::Int64(Some(n)))
            .map_err(|_| format!("parameter `{}` must be a whole number, not `{}`", param.name, text.escape_debug())),
    }
}

impl Report {
    /// The parameter values: the given ones over the defaults; unknown names are refused.
    pub fn bind(&self, given: &BTreeMap<String, String>) -> Result<Vec<(String, ScalarValue)>, Error> {
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::Report(format!("report `{}` has no parameter `{name}` (it takes: {})", self.name, names.join(", "))));
            }
        }
        self.params
            .iter()
            .map(|p| {
                let text = given.get(&p.name).unwrap_or(&p.default);
                value(p, text).map(|v| (p.name.clone(), v)).map_err(Error::Report)
            })
            .collect()
    }

    /// Plans the report on `ctx` with `given` parameters.
    pub async fn plan(&self, ctx: &SessionContext, given: &BTreeMap<String, String>) -> Result<DataFrame, Error> {
        let values = self.bind(given)?;
        let df = crate::guard::plan(ctx, self.sql).await?;
        df.with_param_values(values).map_err(|e| crate::guard::explain_error(ctx, e))
    }

    /// The tables the report reads (for the audit log and missing-table messages).
    pub fn tables(&self) -> Vec<&'static str> {
        const TABLES: [&str; 6] = ["attributed_conversions", "conversions_dedup", "conversions", "touchpoints", "spend", "baseline"];
        TABLES.into_iter().filter(|t| self.sql.contains(&format!("from {t}")) || self.sql.contains(&format!("join {t}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_parses_with_a_title_and_date_window() {
        assert_eq!(all().len(), SOURCES.len());
        for r in all() {
            assert!(!r.title.is_empty(), "{}", r.name);
            let names: Vec<&str> = r.params.iter().map(|p| p.name.as_str()).collect();
            assert!(names.starts_with(&["from", "to"]), "{}: {names:?}", r.name);
            for p in &r.params {
                assert!(r.sql.contains(&format!("${}", p.name)), "{}: `{}` unused", r.name, p.name);
            }
            assert!(!r.tables().is_empty(), "{}", r.name);
        }
    }

    #[test]
    fn binding_checks_names_and_types() {
        let r = find("campaign_roas").unwrap();
        let given = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let bound = r.bind(&given(&[("from", "2026-08-01")])).unwrap();
        assert_eq!(bound[0], ("from".to_owned(), ScalarValue::Date32(Some(20_666))));
        assert_eq!(bound[2], ("model".to_owned(), ScalarValue::Utf8(Some("last_touch".into()))));
        let e = r.bind(&given(&[("form", "2026-08-01")])).unwrap_err().to_string();
        assert!(e.contains("no parameter `form`") && e.contains("from, to, model"), "{e}");
        let e = r.bind(&given(&[("to", "yesterday")])).unwrap_err().to_string();
        assert!(e.contains("must be a date"), "{e}");
        assert!(find("nope").unwrap_err().to_string().contains("channel_performance"));
    }
}
