//! The page frame and the pieces every page uses. Markup is written with `format!`; every value
//! that did not come from this code (names, titles, model ids — some of them chosen by API
//! callers) goes through [`esc`] on its way in.

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::web::asset_version;
use crate::web::filters::{PageFilters, Range};
use crate::web::fmt::Change;
use chrono::{DateTime, Utc};

/// Escapes text for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The dashboard's tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Providers,
    Alerts,
    Projections,
    Budgets,
    Keys,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Overview,
        Tab::Providers,
        Tab::Alerts,
        Tab::Projections,
        Tab::Budgets,
        Tab::Keys,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Tab::Overview => "/overview",
            Tab::Providers => "/providers",
            Tab::Alerts => "/alerts",
            Tab::Projections => "/projections",
            Tab::Budgets => "/budgets",
            Tab::Keys => "/keys",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Providers => "Providers",
            Tab::Alerts => "Alerts",
            Tab::Projections => "Projections",
            Tab::Budgets => "Budgets",
            Tab::Keys => "Keys",
        }
    }
}

/// The product mark (the favicon's bars), drawn inline so it follows the colour scheme.
pub const BRAND_MARK: &str =
    "<svg class=\"brand-mark\" viewBox=\"0 0 32 32\" width=\"22\" height=\"22\" \
     aria-hidden=\"true\" focusable=\"false\"><rect width=\"32\" height=\"32\" rx=\"7\"/>\
     <path d=\"M8 22V14m5.3 8V9m5.4 13v-6M24 22V11\"/></svg>";

fn head(title: &str) -> String {
    let v = asset_version();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{} · Tollgate</title>\
         <link rel=\"icon\" href=\"/assets/favicon.svg?v={v}\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/app.css?v={v}\">\
         <script src=\"/assets/app.js?v={v}\" defer></script></head>",
        esc(title)
    )
}

/// A page without tabs (sign-in, errors before a session exists).
pub fn bare_page(title: &str, body: &str) -> String {
    format!(
        "{}<body class=\"bare\"><div class=\"progress\" aria-hidden=\"true\"></div>{body}</body></html>",
        head(title)
    )
}

/// What the frame around a tab's content needs.
#[derive(Debug)]
pub struct Frame<'a> {
    pub tab: Tab,
    /// Who is signed in (the header says who, and what they may see).
    pub principal: &'a Principal,
    /// The session's CSRF token (the sign-out form carries it).
    pub csrf: &'a str,
    pub filters: &'a PageFilters,
    /// Providers the filter offers (the API's configured list).
    pub providers: &'a [String],
    /// The API query the page's figures were computed for (`data-api-query` on `<main>`).
    pub api_query: &'a str,
    /// Said under the filter bar when a filter does not apply to this tab.
    pub filter_note: Option<&'a str>,
}

/// A full page: header, tabs, filter bar, and `body` in `<main>`.
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let p = frame.principal;
    let who = match p.role {
        Role::Admin => format!("{} · admin · all orgs", esc(&p.name)),
        Role::OrgAdmin => format!("{} · org admin · {}", esc(&p.name), esc(&p.org_id)),
        Role::Viewer if !p.user_id.is_empty() => format!(
            "{} · viewer · {} / {}",
            esc(&p.name),
            esc(&p.org_id),
            esc(&p.user_id)
        ),
        Role::Viewer => format!("{} · viewer · {}", esc(&p.name), esc(&p.org_id)),
    };
    let tabs: String = Tab::ALL
        .iter()
        .map(|t| {
            format!(
                "<a href=\"{}\" data-nav{}>{}</a>",
                esc(&frame.filters.href(t.path())),
                if *t == frame.tab {
                    " aria-current=\"page\""
                } else {
                    ""
                },
                t.label()
            )
        })
        .collect();
    format!(
        "{head}<body><div class=\"progress\" aria-hidden=\"true\"></div>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"{home}\" data-nav>\
         {mark}Tollgate</a>\
         <span class=\"who\" data-role=\"{role}\">{who}</span>\
         <form method=\"post\" action=\"/logout\" class=\"signout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" class=\"link\">Sign out</button></form></header>\
         <nav class=\"tabs\" aria-label=\"Dashboard sections\">{tabs}</nav>\
         {filters}\
         <main id=\"main\" tabindex=\"-1\" data-tab=\"{tab}\" data-api-query=\"{api}\">{body}</main>\
         <footer class=\"foot\">Figures are the dashboard API's, computed for your token. \
         Days are UTC days.</footer>\
         <div class=\"tooltip\" role=\"status\" hidden></div></body></html>",
        head = head(frame.tab.label()),
        mark = BRAND_MARK,
        home = esc(&frame.filters.href("/overview")),
        role = p.role.as_str(),
        csrf = esc(frame.csrf),
        filters = filter_bar(frame),
        tab = frame.tab.path().trim_start_matches('/'),
        api = esc(frame.api_query),
    )
}

fn filter_bar(frame: &Frame<'_>) -> String {
    let f = frame.filters;
    let path = frame.tab.path();
    let presets: String = Range::PRESETS
        .iter()
        .map(|r| {
            format!(
                "<a class=\"chip\" href=\"{}\" data-nav data-range=\"{k}\"{}>{k}</a>",
                esc(&f.with_range(*r).href(path)),
                if f.range == *r {
                    " aria-current=\"true\""
                } else {
                    ""
                },
                k = r.key(),
            )
        })
        .collect();
    let options: String = std::iter::once(("", "All providers"))
        .chain(frame.providers.iter().map(|p| (p.as_str(), p.as_str())))
        .map(|(v, label)| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                esc(v),
                if f.provider.as_deref().unwrap_or("") == v {
                    " selected"
                } else {
                    ""
                },
                esc(label)
            )
        })
        .collect();
    let org = if frame.principal.role == Role::Admin {
        format!(
            "<label class=\"field\"><span>Org</span><input name=\"org\" value=\"{}\" \
             placeholder=\"All orgs\" size=\"10\" autocomplete=\"off\"></label>",
            esc(f.org.as_deref().unwrap_or(""))
        )
    } else {
        String::new()
    };
    let custom = f.range == Range::Custom;
    let hidden_range = if custom {
        String::new()
    } else {
        format!(
            "<input type=\"hidden\" name=\"range\" value=\"{}\">",
            f.range.key()
        )
    };
    let date_value = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| s.len() == 10)
            .map(esc)
            .unwrap_or_default()
    };
    let note = frame.filter_note.map_or(String::new(), |n| {
        format!("<p class=\"filter-note\">{}</p>", esc(n))
    });
    format!(
        "<section class=\"filters\" aria-label=\"Filters\">\
         <div class=\"presets\" role=\"group\" aria-label=\"Time range\">{presets}\
         <a class=\"chip\" href=\"#custom-range\" data-custom{custom_current}>Custom</a></div>\
         <form class=\"filter-form\" method=\"get\" action=\"{path}\" data-nav-form>{hidden_range}\
         <label class=\"field\"><span>Provider</span>\
         <select name=\"provider\" data-autosubmit>{options}</select></label>{org}\
         <fieldset class=\"custom\" id=\"custom-range\"{custom_open}><legend>Custom range (UTC days)</legend>\
         <label class=\"field\"><span>From</span><input type=\"date\" name=\"from\" value=\"{from}\"></label>\
         <label class=\"field\"><span>To</span><input type=\"date\" name=\"to\" value=\"{to}\"></label>\
         </fieldset>\
         <button type=\"submit\">Apply</button></form>\
         <p class=\"period\">Showing <strong>{period}</strong></p>{note}</section>",
        custom_current = if custom {
            " aria-current=\"true\""
        } else {
            ""
        },
        custom_open = if custom { " data-open" } else { "" },
        from = date_value(&f.from),
        to = date_value(&f.to),
        period = esc(&f.describe()),
    )
}

/// A titled panel.
pub fn panel(id: &str, title: &str, subtitle: &str, body: &str) -> String {
    let sub = if subtitle.is_empty() {
        String::new()
    } else {
        format!("<p class=\"panel-sub\">{subtitle}</p>")
    };
    format!(
        "<section class=\"panel\" id=\"{id}\" aria-labelledby=\"{id}-h\">\
         <header class=\"panel-head\"><h2 id=\"{id}-h\">{title}</h2>{sub}</header>{body}</section>"
    )
}

/// The designed empty state: what is missing and what to do about it.
pub fn empty(title: &str, hint: &str) -> String {
    format!(
        "<div class=\"empty\"><svg viewBox=\"0 0 24 24\" width=\"28\" height=\"28\" aria-hidden=\"true\" \
         focusable=\"false\"><path d=\"M4 19h16M6 16V9m4 7V5m4 11v-5m4 5V8\" fill=\"none\" \
         stroke=\"currentColor\" stroke-width=\"1.8\" stroke-linecap=\"round\"/></svg>\
         <p class=\"empty-title\">{title}</p><p>{hint}</p></div>"
    )
}

/// The designed error state for a section or page that could not be computed.
pub fn error_panel(title: &str, e: &ApiError, retry: Option<&str>) -> String {
    // Logged here, once per failed section, as the API's error response logs its own.
    match e {
        ApiError::Internal(detail) => {
            tracing::error!(%detail, section = title, "dashboard page section failed")
        }
        ApiError::Unavailable(detail) => {
            tracing::warn!(%detail, section = title, "dashboard page section unavailable")
        }
        _ => {}
    }
    let (what, detail) = match e {
        ApiError::BadRequest { message, .. } => {
            ("These filters do not work together", esc(message))
        }
        ApiError::Unavailable(_) => (
            "The database is not reachable right now",
            "Nothing is lost: the figures will be back once it answers. Retry shortly.".into(),
        ),
        ApiError::Internal(_) => (
            "Something went wrong on the server",
            "The server log has the details.".into(),
        ),
        ApiError::Forbidden(m) => ("Not allowed for this token", esc(m)),
        ApiError::NotFound(m) => ("Not found", esc(m)),
        ApiError::Conflict(m) => ("That could not be done", esc(m)),
        ApiError::Unauthorized(m) => ("Not signed in", esc(m)),
    };
    let retry = retry.map_or(String::new(), |href| {
        format!(
            "<p><a class=\"button\" href=\"{}\">{}</a></p>",
            esc(href),
            if matches!(e, ApiError::BadRequest { .. }) {
                "Reset filters"
            } else {
                "Retry"
            }
        )
    });
    format!(
        "<div class=\"panel error\" role=\"alert\"><p class=\"error-title\">{} — {what}</p>\
         <p>{detail}</p>{retry}</div>",
        esc(title)
    )
}

/// A figure card with its change against the previous period.
#[derive(Debug)]
pub struct Card<'a> {
    /// `data-card`, for tests and styling.
    pub key: &'a str,
    pub label: &'a str,
    /// The exact value (as the API gives it) and how it is shown.
    pub exact: String,
    pub shown: String,
    /// The previous period's exact value and how it is shown, with the comparison phrase.
    pub previous: Option<(String, String, Change, String)>,
    /// A line under the figure (HTML, already escaped).
    pub sub: String,
}

pub fn card(c: &Card<'_>) -> String {
    let delta = match &c.previous {
        Some((exact, shown, change, vs)) => format!(
            "<p class=\"delta {dir}\"><span class=\"arrow\" aria-hidden=\"true\">{arrow}</span> \
             <span class=\"delta-text\">{text}</span> <span class=\"vs\">{vs} \
             (<data class=\"prev\" value=\"{exact}\">{shown}</data>)</span></p>",
            dir = change.direction,
            arrow = match change.direction {
                "up" => "▲",
                "down" => "▼",
                _ => "•",
            },
            text = esc(&change.text),
            vs = esc(vs),
            exact = esc(exact),
            shown = esc(shown),
        ),
        None => String::new(),
    };
    format!(
        "<article class=\"card\" data-card=\"{key}\"><h3 class=\"card-label\">{label}</h3>\
         <p class=\"card-value{text}\"><data value=\"{exact}\" title=\"{exact}\">{shown}</data></p>\
         {delta}<p class=\"card-sub\">{sub}</p></article>",
        key = c.key,
        // Words rather than a figure get a smaller type.
        text = if c.shown.chars().any(char::is_alphabetic) && !c.shown.starts_with('$') {
            " text"
        } else {
            ""
        },
        label = esc(c.label),
        exact = esc(&c.exact),
        shown = esc(&c.shown),
        sub = c.sub,
    )
}

/// A table column: its heading, and whether it holds numbers (right-aligned).
#[derive(Clone, Copy, Debug)]
pub struct Col<'a> {
    pub label: &'a str,
    pub num: bool,
}

/// A text column.
pub const fn col(label: &str) -> Col<'_> {
    Col { label, num: false }
}

/// A number column.
pub const fn num(label: &str) -> Col<'_> {
    Col { label, num: true }
}

/// A table row: extra attributes for `<tr>` (already escaped) and its cells' HTML; the first
/// cell is the row's header.
#[derive(Debug, Default)]
pub struct Row {
    pub attrs: String,
    pub cells: Vec<String>,
}

/// A data table. Every cell carries its column's name (`data-label`), so on a phone each row
/// becomes a small card of label–value lines instead of a table wider than the screen.
pub fn table(id: &str, columns: &[Col<'_>], rows: &[Row]) -> String {
    let head: String = columns
        .iter()
        .map(|c| {
            format!(
                "<th scope=\"col\" role=\"columnheader\"{}>{}</th>",
                if c.num { " class=\"num\"" } else { "" },
                esc(c.label)
            )
        })
        .collect();
    let body: String = rows
        .iter()
        .map(|r| {
            let cells: String = r
                .cells
                .iter()
                .zip(columns)
                .enumerate()
                .map(|(i, (cell, c))| {
                    let class = if c.num { " class=\"num\"" } else { "" };
                    if i == 0 {
                        format!("<th scope=\"row\" role=\"rowheader\"{class}>{cell}</th>")
                    } else {
                        format!(
                            "<td role=\"cell\"{class} data-label=\"{}\"><span>{cell}</span></td>",
                            esc(c.label)
                        )
                    }
                })
                .collect();
            format!("<tr role=\"row\"{}>{cells}</tr>", r.attrs)
        })
        .collect();
    let id_attr = if id.is_empty() {
        String::new()
    } else {
        format!(" id=\"{id}\"")
    };
    format!(
        // The roles keep the table's meaning for screen readers when CSS restacks it.
        "<div class=\"table-wrap\"><table class=\"stack\" role=\"table\"{id_attr}><thead role=\"rowgroup\">\
         <tr role=\"row\">{head}</tr></thead><tbody role=\"rowgroup\">{body}</tbody></table></div>"
    )
}

/// A `<time>` element: the readable time, the machine one in `datetime`.
pub fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        crate::web::fmt::iso(t),
        crate::web::fmt::datetime(t)
    )
}

/// A hidden field with the session's CSRF token.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// The API's message for form field `name`, when `error` is a 400 that names it.
pub fn field_message(error: Option<&ApiError>, name: &str) -> Option<String> {
    match error {
        Some(ApiError::BadRequest {
            field: Some(field),
            message,
        }) if field == name => Some(message.clone()),
        _ => None,
    }
}

/// A labelled text input (`id` = `{id_prefix}{name}`) with its hint, and the API's message
/// beside it after a refusal (`aria-invalid`, `aria-describedby` set to match).
pub fn text_field(
    id_prefix: &str,
    name: &str,
    label: &str,
    value: &str,
    extra: &str,
    help: &str,
    error: Option<&str>,
) -> String {
    let described = match (error.is_some(), help.is_empty()) {
        (true, true) => format!(" aria-describedby=\"{name}-error\""),
        (true, false) => format!(" aria-describedby=\"{name}-error {name}-help\""),
        (false, false) => format!(" aria-describedby=\"{name}-help\""),
        (false, true) => String::new(),
    };
    format!(
        "<div class=\"form-row\" data-field=\"{name}\"><label for=\"{id_prefix}{name}\">{label}</label>\
         <input id=\"{id_prefix}{name}\" name=\"{name}\" value=\"{}\"{extra}{described}{}>{}{}</div>",
        esc(value),
        if error.is_some() {
            " aria-invalid=\"true\""
        } else {
            ""
        },
        error.map_or(String::new(), |m| format!(
            "<p class=\"field-error\" id=\"{name}-error\">{}</p>",
            esc(m)
        )),
        if help.is_empty() {
            String::new()
        } else {
            format!("<p class=\"hint\" id=\"{name}-help\">{help}</p>")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<img src=x onerror=\"alert('1')\">&"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }
}
