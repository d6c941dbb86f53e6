//! The OpenAPI document, generated from the handlers' annotations (`GET /openapi.json`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate dashboard API", description = "What an organisation spends on AI model APIs: usage, cost, models, providers, budgets, alerts, credits."),
    paths(
        crate::alerts::test_rule,
        crate::alerts::deliveries,
        crate::alerts::recent_deliveries,
        crate::analytics::overview,
        crate::analytics::timeseries,
        crate::analytics::providers,
        crate::analytics::models,
        crate::analytics::top_users,
        crate::analytics::top_apps,
        crate::projections::projections,
        crate::credits::list,
        crate::credits::record,
        crate::reconciliation::list,
        crate::budgets::list,
        crate::budgets::create,
        crate::budgets::get_one,
        crate::budgets::replace,
        crate::budgets::delete,
        crate::budgets::status,
        crate::alerts::list_rules,
        crate::alerts::create_rule,
        crate::alerts::get_rule,
        crate::alerts::replace_rule,
        crate::alerts::delete_rule,
        crate::alerts::list_alerts,
        crate::alerts::acknowledge,
        crate::alerts::resolve,
        crate::keys::list,
        crate::keys::create,
        crate::keys::revoke,
        crate::export::export,
        crate::prices::list,
        crate::prices::put,
        crate::prices::delete,
        crate::prices::reprice_range,
    ),
    modifiers(&BearerAuth),
    tags((name = "analytics", description = "Figures from the rollups, scoped by the caller's token"),
         (name = "credits", description = "Provider balances, and recorded cost against the providers' bills"),
         (name = "budgets", description = "Spending limits per org, user or app, and their current period"),
         (name = "alerts", description = "Alert rules, and alerts with acknowledgement and resolution"),
         (name = "keys", description = "App keys (tg_) for the edge worker"),
         (name = "export", description = "Raw usage events as CSV or NDJSON"),
         (name = "prices", description = "The price book: entries with their history, and repricing stored costs"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tga_…")
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
