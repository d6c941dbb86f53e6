//! Alert rules and alerts: CRUD for rules; alerts listed, acknowledged and resolved with who
//! and when. (Evaluation — turning rules into alerts — runs in the evaluator.)

use axum::Router;
use tollgate_clickhouse::clickhouse::Client;
use tollgate_clickhouse::queries::NamedQuery;
use tollgate_clickhouse::{read_query, Scope};

use crate::error::ApiResult;
use crate::AppState;

const ALERTS_OPEN_COUNT: NamedQuery = NamedQuery {
    name: "admin/alerts_open_count",
    sql: include_str!("../../clickhouse/queries/admin/alerts_open_count.sql"),
};

/// Alerts not yet resolved within `scope` (alerts belong to orgs; user scopes count their
/// org's alerts).
pub async fn open_count(client: &Client, scope: &Scope) -> ApiResult<u64> {
    let org = match scope {
        Scope::AllOrgs => None,
        Scope::Org { org_id } | Scope::OrgUser { org_id, .. } | Scope::OrgApp { org_id, .. } => {
            Some(org_id.as_str())
        }
    };
    let sql = ALERTS_OPEN_COUNT
        .body()
        .replace("{orgs}", if org.is_some() { "org_id = ?" } else { "1 = 1" });
    let mut q = read_query(client, &sql);
    if let Some(o) = org {
        q = q.bind(o);
    }
    Ok(q.fetch_one::<u64>().await?)
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
}
