//! What SQL a reader may run: queries only.
//!
//! Every SQL surface (the CLI, saved reports, the Postgres endpoint) checks a statement with
//! [`check_statement`] before planning: queries (`SELECT`, `WITH`, `VALUES`, set operations),
//! `EXPLAIN` of a query and `SHOW TABLES`/`SHOW COLUMNS` pass; DDL (`CREATE [EXTERNAL] TABLE`,
//! `CREATE VIEW`, `DROP`), DML (`INSERT`, `COPY`), `SET` and everything else is refused. The
//! CLI also plans with DataFusion's [`SQLOptions`] set to refuse DDL, DML and statements, so
//! the allow-list is not the only line. The tenant boundary itself does not depend on this
//! module (see [`crate::catalog`]); this keeps analysts from writing files, defining tables
//! over arbitrary paths or changing the session.

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::Error;

/// Refuses anything but a read-only query; `Err` carries a one-line reason.
pub fn check_statement(statement: &Statement) -> Result<(), String> {
    match statement {
        Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Ok(()),
        Statement::Explain { statement, .. } => check_statement(statement),
        other => Err(format!("only read-only queries are allowed; refused: `{}`", first_words(&other.to_string()))),
    }
}

fn check_df_statement(statement: &DfStatement) -> Result<(), String> {
    match statement {
        DfStatement::Statement(s) => check_statement(s),
        DfStatement::Explain(e) => check_df_statement(&e.statement),
        other => Err(format!("only read-only queries are allowed; refused: `{}`", first_words(&other.to_string()))),
    }
}

/// The statement's first words, enough to name what was refused without echoing data.
fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// DataFusion's own second line: no DDL, no DML, no `SET`/transactions.
pub(crate) fn sql_options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Plans one read-only statement on `ctx`. Unknown tables are reported with the list of
/// tables this session has.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame, Error> {
    let statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| Error::Sql(e.to_string()))?;
    match statements.len() {
        0 => return Err(Error::Sql("the query is empty".into())),
        1 => {}
        n => return Err(Error::Sql(format!("one statement at a time, please (got {n})"))),
    }
    check_df_statement(&statements[0]).map_err(Error::Refused)?;
    ctx.sql_with_options(sql, sql_options()).await.map_err(|e| explain_error(ctx, e))
}

/// DataFusion's message, with the table list added when a table is unknown.
pub(crate) fn explain_error(ctx: &SessionContext, e: DataFusionError) -> Error {
    let message = e.to_string();
    if message.contains("table") && message.contains("not found") {
        let tables = crate::catalog::table_names(ctx);
        return Error::Sql(format!("{message}; the tables are: {}", tables.join(", ")));
    }
    if message.contains("not supported") && (message.contains("DDL") || message.contains("DML") || message.contains("Statement")) {
        return Error::Refused(format!("only read-only queries are allowed ({message})"));
    }
    Error::Sql(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> DfStatement {
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).unwrap().pop_front().unwrap()
    }

    #[test]
    fn only_queries_pass() {
        for ok in ["select 1", "with a as (select 1) select * from a", "explain select 1", "show tables", "select 1 union all select 2"] {
            assert!(check_df_statement(&parse(ok)).is_ok(), "{ok}");
        }
        for bad in ["create table t as select 1", "drop table conversions", "insert into t values (1)", "set datafusion.execution.batch_size = 1", "create view v as select 1"] {
            let e = check_df_statement(&parse(bad)).unwrap_err();
            assert!(e.starts_with("only read-only queries are allowed"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn extensions_and_several_statements_are_refused() {
        let ctx = SessionContext::new();
        for bad in ["create external table x stored as parquet location '/tmp'", "copy (select 1) to '/tmp/x.parquet'", "explain copy (select 1) to '/tmp/y.csv'"] {
            assert!(matches!(plan(&ctx, bad).await, Err(Error::Refused(_))), "{bad}");
        }
        assert!(matches!(plan(&ctx, "select 1; select 2").await, Err(Error::Sql(m)) if m.contains("one statement")));
        assert!(plan(&ctx, "select 1").await.is_ok());
    }
}
