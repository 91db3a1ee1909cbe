//! [`Explain`]: PostgreSQL's JSON plan, with accessors for what one usually looks at first and
//! an indented text rendering close to `EXPLAIN`'s own text format.

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde_json::Value;

/// What [`Database::explain`](crate::Database::explain) returned: the statement and the plan
/// PostgreSQL reported for it.
///
/// `Display` prints the plan as an indented tree, like `EXPLAIN`'s text format (node, relation,
/// index, costs, actual times and rows, conditions, buffers, planning and execution time).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Explain {
    /// The statement that was explained: rendered for the handle's schema, without a trailing
    /// `;`.
    pub sql: String,
    /// Whether it ran (`ANALYZE`), in a transaction that was rolled back.
    pub analyzed: bool,
    /// The `QUERY PLAN` value of `EXPLAIN (FORMAT JSON)`: an array with one object holding
    /// `"Plan"` (the top node, its children under `"Plans"`), and, depending on the options,
    /// `"Planning Time"`, `"Execution Time"` (milliseconds), `"Triggers"`, `"Planning"` buffers.
    pub plan: Value,
}

impl Explain {
    /// The object of the plan array (`plan[0]`).
    fn summary(&self) -> Option<&Value> {
        self.plan.get(0)
    }

    /// The top plan node (`plan[0]["Plan"]`).
    pub fn root(&self) -> Option<&Value> {
        self.summary()?.get("Plan")
    }

    /// The top node's type, e.g. `"Seq Scan"`, `"ModifyTable"`, `"Hash Join"`.
    pub fn node_type(&self) -> Option<&str> {
        self.root()?.get("Node Type")?.as_str()
    }

    /// The planner's estimated total cost of the top node (arbitrary units).
    pub fn total_cost(&self) -> Option<f64> {
        self.root()?.get("Total Cost")?.as_f64()
    }

    /// The planner's estimate of the rows the top node returns.
    pub fn estimated_rows(&self) -> Option<f64> {
        self.root()?.get("Plan Rows")?.as_f64()
    }

    /// The rows the top node actually returned (with `analyze` only).
    pub fn actual_rows(&self) -> Option<f64> {
        self.root()?.get("Actual Rows")?.as_f64()
    }

    /// Planning time (with `analyze` only).
    pub fn planning_time(&self) -> Option<Duration> {
        millis(self.summary()?.get("Planning Time")?)
    }

    /// Execution time, triggers included (with `analyze` only).
    pub fn execution_time(&self) -> Option<Duration> {
        millis(self.summary()?.get("Execution Time")?)
    }
}

fn millis(v: &Value) -> Option<Duration> {
    Duration::try_from_secs_f64(v.as_f64()? / 1000.0).ok()
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(root) = self.root() else {
            return write!(f, "{}", self.plan);
        };
        let mut out = String::new();
        node(&mut out, root, 0);
        if let Some(s) = self.summary() {
            for key in ["Planning Time", "Execution Time"] {
                if let Some(ms) = s.get(key).and_then(Value::as_f64) {
                    let _ = writeln!(out, "{key}: {ms:.3} ms");
                }
            }
        }
        f.write_str(out.trim_end())
    }
}

/// Writes one node and its children; `depth` 0 is the top.
fn node(out: &mut String, n: &Value, depth: usize) {
    let (head, detail) = match depth {
        0 => (String::new(), " ".repeat(2)),
        d => (
            format!("{}->  ", " ".repeat(6 * d - 4)),
            " ".repeat(6 * d + 2),
        ),
    };
    if let Some(name) = text(n, "Subplan Name") {
        let _ = writeln!(out, "{}{name}", " ".repeat((6 * depth).saturating_sub(4)));
    }
    let _ = write!(out, "{head}{}", label(n));
    let num = |k: &str| n.get(k).and_then(Value::as_f64);
    if let (Some(start), Some(total)) = (num("Startup Cost"), num("Total Cost")) {
        let rows = num("Plan Rows").unwrap_or(0.0);
        let width = num("Plan Width").unwrap_or(0.0);
        let _ = write!(
            out,
            "  (cost={start:.2}..{total:.2} rows={rows:.0} width={width:.0})"
        );
    }
    if let Some(rows) = num("Actual Rows") {
        let loops = num("Actual Loops").unwrap_or(1.0);
        match (num("Actual Startup Time"), num("Actual Total Time")) {
            (Some(a), Some(b)) => {
                let _ = write!(
                    out,
                    " (actual time={a:.3}..{b:.3} rows={rows:.0} loops={loops:.0})"
                );
            }
            _ => {
                let _ = write!(out, " (actual rows={rows:.0} loops={loops:.0})");
            }
        }
    } else if num("Actual Loops") == Some(0.0) {
        out.push_str(" (never executed)");
    }
    out.push('\n');
    for key in [
        "Output",
        "Hash Cond",
        "Merge Cond",
        "Index Cond",
        "Recheck Cond",
        "Join Filter",
        "Filter",
        "Sort Key",
        "Group Key",
        "Rows Removed by Filter",
        "Rows Removed by Join Filter",
        "Rows Removed by Index Recheck",
        "Heap Fetches",
    ] {
        let value = match n.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
            Some(Value::String(s)) => s.clone(),
            // Zero removed rows are noise (PostgreSQL's text format leaves them out too).
            Some(Value::Number(x)) if x.as_f64() != Some(0.0) || key == "Heap Fetches" => {
                x.to_string()
            }
            _ => continue,
        };
        let _ = writeln!(out, "{detail}{key}: {value}");
    }
    if let Some(b) = buffers(n) {
        let _ = writeln!(out, "{detail}Buffers: {b}");
    }
    if let Some(Value::Array(children)) = n.get("Plans") {
        for c in children {
            node(out, c, depth + 1);
        }
    }
}

fn text<'a>(n: &'a Value, key: &str) -> Option<&'a str> {
    n.get(key)?.as_str()
}

/// The node's first line, before the costs: `Seq Scan on users u`, `Update on users`,
/// `Index Scan using users_pkey on users`, `Hash Left Join`, `HashAggregate`, …
fn label(n: &Value) -> String {
    let kind = text(n, "Node Type").unwrap_or("?");
    let mut label = match (kind, text(n, "Operation"), text(n, "Strategy")) {
        ("ModifyTable", Some(op), _) => op.to_string(),
        ("Aggregate", _, Some("Hashed")) => "HashAggregate".into(),
        ("Aggregate", _, Some("Sorted")) => "GroupAggregate".into(),
        ("Aggregate", _, Some("Mixed")) => "MixedAggregate".into(),
        _ => kind.to_string(),
    };
    if let Some(join) = text(n, "Join Type").filter(|j| *j != "Inner") {
        label = match label.strip_suffix(" Join") {
            Some(stem) => format!("{stem} {join} Join"),
            None => format!("{label} {join} Join"),
        };
    }
    if let Some(index) = text(n, "Index Name") {
        match kind {
            "Bitmap Index Scan" => return format!("{label} on {index}"),
            _ => label = format!("{label} using {index}"),
        }
    }
    let target = text(n, "Relation Name")
        .or_else(|| text(n, "CTE Name"))
        .or_else(|| text(n, "Function Name"));
    if let Some(rel) = target {
        let qualified = match text(n, "Schema") {
            Some(s) => format!("{s}.{rel}"),
            None => rel.to_string(),
        };
        label = format!("{label} on {qualified}");
        if let Some(alias) = text(n, "Alias").filter(|a| *a != rel) {
            label = format!("{label} {alias}");
        }
    }
    label
}

/// `shared hit=3 read=1, temp written=2`: the non-zero block counts of a node.
fn buffers(n: &Value) -> Option<String> {
    let mut groups = Vec::new();
    for scope in ["Shared", "Local", "Temp"] {
        let counts: Vec<String> = ["Hit", "Read", "Dirtied", "Written"]
            .iter()
            .filter_map(|what| {
                let v = n.get(format!("{scope} {what} Blocks"))?.as_u64()?;
                (v > 0).then(|| format!("{}={v}", what.to_ascii_lowercase()))
            })
            .collect();
        if !counts.is_empty() {
            groups.push(format!(
                "{} {}",
                scope.to_ascii_lowercase(),
                counts.join(" ")
            ));
        }
    }
    (!groups.is_empty()).then(|| groups.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn analyzed_update() -> Explain {
        Explain {
            sql: "UPDATE t SET v = v + 1 WHERE id = $1".into(),
            analyzed: true,
            plan: json!([{
                "Plan": {
                    "Node Type": "ModifyTable", "Operation": "Update", "Relation Name": "t",
                    "Alias": "t", "Startup Cost": 0.15, "Total Cost": 8.17, "Plan Rows": 0,
                    "Plan Width": 0, "Actual Startup Time": 0.05, "Actual Total Time": 0.052,
                    "Actual Rows": 0, "Actual Loops": 1, "Shared Hit Blocks": 3,
                    "Plans": [{
                        "Node Type": "Index Scan", "Index Name": "t_pkey", "Relation Name": "t",
                        "Alias": "x", "Startup Cost": 0.15, "Total Cost": 8.17, "Plan Rows": 1,
                        "Plan Width": 10, "Actual Startup Time": 0.01, "Actual Total Time": 0.011,
                        "Actual Rows": 1, "Actual Loops": 1, "Index Cond": "(id = $1)",
                        "Rows Removed by Index Recheck": 0, "Shared Hit Blocks": 2,
                        "Shared Read Blocks": 1
                    }]
                },
                "Planning Time": 0.08,
                "Execution Time": 0.1
            }]),
        }
    }

    #[test]
    fn accessors_read_the_top_node_and_the_times() {
        let e = analyzed_update();
        assert_eq!(e.node_type(), Some("ModifyTable"));
        assert_eq!(e.total_cost(), Some(8.17));
        assert_eq!(e.estimated_rows(), Some(0.0));
        assert_eq!(e.actual_rows(), Some(0.0));
        assert_eq!(e.planning_time(), Some(Duration::from_micros(80)));
        assert_eq!(e.execution_time(), Some(Duration::from_micros(100)));
        let plain = Explain {
            plan: json!([{"Plan": {"Node Type": "Seq Scan", "Total Cost": 1.5}}]),
            analyzed: false,
            ..e
        };
        assert_eq!(plain.execution_time(), None);
        assert_eq!(plain.actual_rows(), None);
    }

    #[test]
    fn displays_an_indented_tree() {
        assert_eq!(
            analyzed_update().to_string(),
            "Update on t  (cost=0.15..8.17 rows=0 width=0) (actual time=0.050..0.052 rows=0 loops=1)
  Buffers: shared hit=3
  ->  Index Scan using t_pkey on t x  (cost=0.15..8.17 rows=1 width=10) (actual time=0.010..0.011 rows=1 loops=1)
        Index Cond: (id = $1)
        Buffers: shared hit=2 read=1
Planning Time: 0.080 ms
Execution Time: 0.100 ms"
        );
    }

    #[test]
    fn labels_joins_aggregates_and_bitmap_scans() {
        let l = |v: Value| label(&v);
        assert_eq!(
            l(json!({"Node Type": "Hash Join", "Join Type": "Left"})),
            "Hash Left Join"
        );
        assert_eq!(
            l(json!({"Node Type": "Nested Loop", "Join Type": "Anti"})),
            "Nested Loop Anti Join"
        );
        assert_eq!(
            l(json!({"Node Type": "Aggregate", "Strategy": "Hashed"})),
            "HashAggregate"
        );
        assert_eq!(
            l(json!({"Node Type": "Bitmap Index Scan", "Index Name": "i"})),
            "Bitmap Index Scan on i"
        );
        assert_eq!(
            l(
                json!({"Node Type": "Seq Scan", "Relation Name": "u", "Schema": "app", "Alias": "u"})
            ),
            "Seq Scan on app.u"
        );
    }
}
