//! The Postgres wire endpoint: `psql`, drivers and BI tools over the same tenant-bound catalog.
//!
//! Built on `datafusion-postgres` (which speaks the simple and extended protocols and serves a
//! `pg_catalog`), with three things of our own around it:
//! - **Authentication**: cleartext password where the user name is the advertiser id and the
//!   password is one of its live API keys (checked against the key store's hashes at each
//!   login, so a revoked key stops working at once). Use it behind TLS or on loopback.
//! - **Tenant binding**: a successful login builds that advertiser's session
//!   ([`crate::session_for`] with [`Reader::Advertiser`]) and pins it to the connection; every
//!   statement of the connection is parsed, planned and run on it. Identifiers travel as
//!   `Binary` (the wire cannot carry `FixedSizeBinary`).
//! - **Read-only**: a query hook refuses anything but queries, `EXPLAIN`, `SHOW`, client `SET`s
//!   (not `datafusion.*` settings), transactions and cursors; each statement run is audited.

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures::Sink;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tally_core::{Action, AdvertiserId, AuditLog, KeyStore, Store};
use tokio::net::TcpListener;

use crate::catalog::{Reader, SessionOptions, session_for};

/// The statement type `datafusion-postgres` plans into.
type DfStatement = (String, Option<(Statement, LogicalPlan)>);

/// What the endpoint serves from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The store the sessions read.
    pub store: Store,
    /// The key store file (re-read at each login).
    pub keystore: PathBuf,
    /// Where queries are recorded.
    pub audit: AuditLog,
}

/// Serves `endpoint` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let fallback = DfSessionService::new(Arc::new(SessionContext::new())).query_parser();
    let handlers = Arc::new(Handlers(Arc::new(Service { endpoint, parser: Arc::new(TenantParser { fallback }) })));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (socket, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "postgres endpoint: accept failed");
                        continue;
                    }
                };
                let handlers = handlers.clone();
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(error = %e, "postgres connection ended with an error");
                    }
                });
            }
        }
    }
}

/// The session a login pinned to its connection.
struct Tenant {
    advertiser: AdvertiserId,
    service: Arc<DfSessionService>,
}

struct Service {
    endpoint: Endpoint,
    parser: Arc<TenantParser>,
}

struct Handlers(Arc<Service>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message)))
}

fn tenant<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Tenant>> {
    client.session_extensions().get::<Tenant>().ok_or_else(|| user_error("28000", "not authenticated".into()))
}

impl Service {
    /// The advertiser `user` if `password` is one of its live keys.
    fn authenticate(&self, user: &str, password: &str) -> Option<AdvertiserId> {
        let keys = KeyStore::open_or_create(&self.endpoint.keystore).ok()?;
        let principal = keys.authenticate(password)?;
        (principal.advertiser_id.as_str() == user).then_some(principal.advertiser_id)
    }

    async fn tenant_service(&self, advertiser: &AdvertiserId) -> datafusion::error::Result<Arc<DfSessionService>> {
        let options = SessionOptions { binary_identifiers: true, ..SessionOptions::default() };
        let ctx = session_for(&self.endpoint.store, &Reader::Advertiser(advertiser.clone()), &options).await?;
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider).map_err(|e| *e)?;
        let hooks: Vec<Arc<dyn QueryHook>> =
            vec![Arc::new(ReadOnlyHook), Arc::new(CursorStatementHook), Arc::new(SetShowHook), Arc::new(TransactionStatementHook)];
        Ok(Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks)))
    }

    fn audit(&self, tenant: &Tenant, sql: &str) -> PgWireResult<()> {
        let detail = tally_core::audit::detail([
            ("via", "pg".into()),
            ("sql_blake3", blake3::hash(sql.as_bytes()).to_hex().to_string().into()),
        ]);
        self.endpoint
            .audit
            .append(&format!("advertiser:{}", tenant.advertiser), Action::Query, detail)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "audit log append failed; query refused");
                user_error("58030", "the audit log cannot be written; the query was not run".into())
            })
    }
}

#[async_trait]
impl StartupHandler for Service {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let Some(advertiser) = self.authenticate(&user, &pwd.password) else {
                    return Err(PgWireError::InvalidPassword(user));
                };
                let service = self.tenant_service(&advertiser).await.map_err(|e| {
                    tracing::error!(error = %e, "postgres endpoint: cannot build a session");
                    user_error("58000", "the catalog cannot be opened".into())
                })?;
                client.session_extensions().insert(Tenant { advertiser, service });
                let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(&*client);
                client.set_pid_and_secret_key(pid, secret);
                finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let tenant = tenant(client)?;
        self.audit(&tenant, query)?;
        <DfSessionService as SimpleQueryHandler>::do_query(&tenant.service, client, query).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = DfStatement;
    type QueryParser = TenantParser;

    fn query_parser(&self) -> Arc<TenantParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<DfStatement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let tenant = tenant(client)?;
        self.audit(&tenant, &portal.statement.statement.0)?;
        <DfSessionService as ExtendedQueryHandler>::do_query(&tenant.service, client, portal, max_rows).await
    }
}

/// Parses on the connection's tenant session; describing needs only the plan.
struct TenantParser {
    fallback: Arc<Parser>,
}

#[async_trait]
impl QueryParser for TenantParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<DfStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let tenant = tenant(client)?;
        tenant.service.query_parser().parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &DfStatement) -> PgWireResult<Vec<Type>> {
        self.fallback.get_parameter_types(stmt)
    }

    fn get_result_schema(&self, stmt: &DfStatement, column_format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.fallback.get_result_schema(stmt, column_format)
    }
}

/// Refuses anything that is not a read-only query or a harmless session statement.
struct ReadOnlyHook;

impl ReadOnlyHook {
    fn check(statement: &Statement) -> PgWireResult<()> {
        let allowed = match statement {
            // Client settings (timezone, datestyle, …), not the engine's.
            Statement::Set(_) => {
                let text = statement.to_string().to_ascii_lowercase();
                if text.contains("datafusion.") {
                    Err("engine settings (`datafusion.*`) cannot be changed here".to_owned())
                } else {
                    Ok(())
                }
            }
            Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. } => Ok(()),
            Statement::Declare { stmts } => stmts.iter().try_for_each(|d| match &d.for_query {
                Some(q) => crate::guard::check_statement(&Statement::Query(q.clone())),
                None => Ok(()),
            }),
            other => crate::guard::check_statement(other),
        };
        allowed.map_err(|reason| user_error("42501", reason))
    }
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        ReadOnlyHook::check(statement).err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        ReadOnlyHook::check(statement).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        ReadOnlyHook::check(statement).err().map(Err)
    }
}
