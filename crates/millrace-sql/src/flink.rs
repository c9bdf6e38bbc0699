//! Flink SQL habits taken as the millrace queries they mean, rewritten in
//! the parsed statement before planning (docs/sql.md, "Coming from Flink
//! SQL").
//!
//! Flink's legacy group-window auxiliary functions name a bound of the
//! window a `GROUP BY TUMBLE(…)` (or `HOP`, `SESSION`) made:
//! `TUMBLE_START(ts, size)` is `tumble(ts, size)['start']`, `…_END` its
//! `['end']` (exclusive, as Flink's). The window function itself needs no
//! rewrite: function names are case-insensitive.

use std::ops::ControlFlow;

use crate::sqlparser::ast::{Expr, FunctionArguments, Query, visit_expressions_mut};
use crate::sqlparser::dialect::GenericDialect;
use crate::sqlparser::parser::Parser;

/// The window function and bound an auxiliary function names.
fn auxiliary(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "tumble_start" => ("tumble", "start"),
        "tumble_end" => ("tumble", "end"),
        "hop_start" => ("hop", "start"),
        "hop_end" => ("hop", "end"),
        "session_start" => ("session", "start"),
        "session_end" => ("session", "end"),
        _ => return None,
    })
}

/// Rewrites every auxiliary function call in `query`; an error names the
/// call that could not be.
pub fn rewrite(query: &mut Query) -> Result<(), String> {
    let mut failed = None;
    let _ = visit_expressions_mut(query, |expr| {
        let Expr::Function(call) = expr else {
            return ControlFlow::Continue(());
        };
        let name = call.name.to_string().to_lowercase();
        let Some((window, bound)) = auxiliary(&name) else {
            return ControlFlow::Continue(());
        };
        let FunctionArguments::List(list) = &call.args else {
            failed = Some(format!("{call}: expected the window's arguments"));
            return ControlFlow::Break(());
        };
        let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
        let text = format!("{window}({})['{bound}']", args.join(", "));
        match Parser::new(&GenericDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
        {
            Ok(rewritten) => {
                *expr = rewritten;
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(format!("{call} (as {text}): {e}"));
                ControlFlow::Break(())
            }
        }
    });
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlparser::ast::Statement;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let Statement::Query(query) = &mut statements[0] else {
            panic!("a query")
        };
        rewrite(query).unwrap();
        query.to_string()
    }

    #[test]
    fn auxiliary_functions_become_bounds_of_the_window() {
        assert_eq!(
            rewritten(
                "SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS s, tumble_end(ts, INTERVAL '10' SECOND) \
                 FROM t GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)"
            ),
            "SELECT tumble(ts, INTERVAL '10' SECOND)['start'] AS s, tumble(ts, INTERVAL '10' SECOND)['end'] \
             FROM t GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)"
        );
        assert_eq!(
            rewritten("SELECT HOP_END(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) FROM t"),
            "SELECT hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)['end'] FROM t"
        );
        assert_eq!(
            rewritten("SELECT x FROM (SELECT SESSION_START(ts, INTERVAL '5' SECOND) AS x FROM t)"),
            "SELECT x FROM (SELECT session(ts, INTERVAL '5' SECOND)['start'] AS x FROM t)"
        );
    }
}
