//! A pipeline file: its statements, parsed.
//!
//! sqlparser reads the file; the one piece of streaming DDL it does not know,
//! `WATERMARK FOR col AS col - INTERVAL '2' SECOND` inside `CREATE TABLE`, is
//! cut out first and replaced by blanks of the same length, so every line and
//! column a later error names is still the user's own.

use crate::sqlparser::ast::{BinaryOperator, ColumnDef, Set, Spanned, Value};
use crate::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, Ident, ObjectName, Query, SqlOption, Statement,
};
use crate::sqlparser::dialect::GenericDialect;
use crate::sqlparser::parser::Parser;
use crate::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{SqlError, SqlResult};
use crate::interval::interval_ms;

/// One statement of a pipeline file, with the line it starts on.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub line: u64,
    pub item: T,
}

#[derive(Debug, Clone)]
pub enum ScriptStatement {
    CreateTable(TableDecl),
    CreateView { name: String, query: Box<Query> },
    Insert { table: String, query: Box<Query> },
    Set { name: String, value: String },
}

/// `CREATE TABLE name (columns, WATERMARK ...) WITH (options)`.
#[derive(Debug, Clone)]
pub struct TableDecl {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDecl>,
    /// `WITH (...)` options, keys lowercased, values unquoted.
    pub options: Vec<(String, String)>,
}

/// `WATERMARK FOR column AS column - INTERVAL ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkDecl {
    pub column: String,
    /// How far behind the largest event time seen the watermark stays.
    pub max_out_of_orderness_ms: i64,
}

/// Parses a whole pipeline file.
pub fn parse_script(sql: &str) -> SqlResult<Vec<Located<ScriptStatement>>> {
    let (text, watermarks) = cut_watermarks(sql)?;
    let statements = Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_statements())
        .map_err(SqlError::syntax)?;
    let mut watermarks = watermarks.into_iter().peekable();
    let mut out = Vec::with_capacity(statements.len());
    for statement in statements {
        let line = statement.span().start.line;
        // A watermark belongs to the CREATE TABLE whose text contains it.
        let end_line = statement.span().end.line;
        let item = match statement {
            Statement::CreateTable(ct) => {
                let watermark = match watermarks.peek() {
                    Some((wline, _)) if *wline >= line && *wline <= end_line.max(line) => {
                        watermarks.next().map(|(_, w)| w)
                    }
                    _ => None,
                };
                let name = object_name(&ct.name);
                if ct.query.is_some() {
                    return Err(SqlError::at(
                        line,
                        format!(
                            "CREATE TABLE {name} AS SELECT is not supported; declare the table's columns and connector, then INSERT INTO {name} SELECT ..."
                        ),
                    ));
                }
                let options = match &ct.table_options {
                    CreateTableOptions::With(opts) | CreateTableOptions::Options(opts) => {
                        table_options(opts, line)?
                    }
                    CreateTableOptions::None => Vec::new(),
                    other => {
                        return Err(SqlError::at(
                            line,
                            format!(
                                "table {name}: unsupported options syntax '{other}'; write WITH (connector = '...', ...)"
                            ),
                        ));
                    }
                };
                ScriptStatement::CreateTable(TableDecl {
                    name,
                    columns: ct.columns.clone(),
                    watermark,
                    options,
                })
            }
            Statement::CreateView(cv) => {
                let mut query = cv.query.clone();
                crate::flink::rewrite(&mut query).map_err(|e| SqlError::at(line, e))?;
                ScriptStatement::CreateView {
                    name: object_name(&cv.name),
                    query,
                }
            }
            Statement::Insert(insert) => {
                let table = insert.table.to_string();
                if !insert.columns.is_empty() {
                    return Err(SqlError::at(
                        line,
                        format!(
                            "INSERT INTO {table} (columns...) is not supported; the SELECT list must match the table's columns in order"
                        ),
                    ));
                }
                let Some(mut query) = insert.source.clone() else {
                    return Err(SqlError::at(
                        line,
                        format!(
                            "INSERT INTO {table} needs a SELECT (streaming inserts read a query)"
                        ),
                    ));
                };
                crate::flink::rewrite(&mut query).map_err(|e| SqlError::at(line, e))?;
                ScriptStatement::Insert {
                    table: table.trim_matches('"').to_string(),
                    query,
                }
            }
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) if values.len() == 1 => ScriptStatement::Set {
                name: object_name(&variable),
                value: option_value(&values[0]),
            },
            other => {
                let text = other.to_string();
                let head: String = text
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
                return Err(SqlError::at(
                    line,
                    format!(
                        "'{head} ...' is not supported in a pipeline file; use CREATE TABLE, CREATE VIEW, INSERT INTO and SET"
                    ),
                ));
            }
        };
        out.push(Located { line, item });
    }
    if let Some((line, _)) = watermarks.next() {
        return Err(SqlError::at(
            line,
            "WATERMARK FOR is only allowed inside CREATE TABLE (...)".to_string(),
        ));
    }
    Ok(out)
}

/// Table and column names: unquoted identifiers compare case-insensitively
/// (lowercased, as DataFusion does); quoted ones keep their case.
pub fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .filter_map(|part| part.as_ident())
        .map(ident_name)
        .collect::<Vec<_>>()
        .join(".")
}

fn table_options(opts: &[SqlOption], line: u64) -> SqlResult<Vec<(String, String)>> {
    opts.iter()
        .map(|opt| match opt {
            SqlOption::KeyValue { key, value } => {
                Ok((key.value.to_lowercase(), option_value(value)))
            }
            other => Err(SqlError::at(
                line,
                format!("table option '{other}' is not of the form key = 'value'"),
            )),
        })
        .collect()
}

/// An option's value as text: strings unquoted, numbers and words as written.
fn option_value(value: &SqlExpr) -> String {
    match value {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        SqlExpr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// Blanks out every `WATERMARK FOR ... AS ...` clause (with its separating
/// comma) and returns the remaining text and the clauses, by line.
fn cut_watermarks(sql: &str) -> SqlResult<(String, Vec<(u64, WatermarkDecl)>)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            SqlError::syntax(crate::sqlparser::parser::ParserError::TokenizerError(
                e.to_string(),
            ))
        })?;
    // Indices of significant tokens (no whitespace or comments).
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let offsets = LineOffsets::new(sql);
    let mut blank = vec![false; sql.len()];
    let mut found = Vec::new();
    let mut k = 0;
    while k < sig.len() {
        if !is_word(&tokens[sig[k]], "WATERMARK")
            || !sig.get(k + 1).is_some_and(|&i| is_word(&tokens[i], "FOR"))
        {
            k += 1;
            continue;
        }
        let start_tok = &tokens[sig[k]];
        let line = start_tok.span.start.line;
        let column = match sig.get(k + 2).map(|&i| &tokens[i].token) {
            Some(Token::Word(w)) => ident_name(&Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: crate::sqlparser::tokenizer::Span::empty(),
            }),
            _ => {
                return Err(SqlError::at(
                    line,
                    "expected a column name after WATERMARK FOR".to_string(),
                ));
            }
        };
        // `WATERMARK FOR col` alone (the clause ends here): the watermark
        // is the largest event time seen, as in Flink.
        let ends_here = |i: &usize| matches!(tokens[*i].token, Token::Comma | Token::RParen);
        let (bound, end) = if sig.get(k + 3).is_some_and(ends_here) {
            (0, k + 3)
        } else if sig.get(k + 3).is_some_and(|&i| is_word(&tokens[i], "AS")) {
            watermark_expression(&tokens, &sig, k + 4, &column, line)?
        } else {
            return Err(SqlError::at(
                line,
                format!(
                    "expected AS after WATERMARK FOR {column} (e.g. WATERMARK FOR {column} AS {column} - INTERVAL '2' SECOND), or nothing for in-order data"
                ),
            ));
        };
        found.push((
            line,
            WatermarkDecl {
                column,
                max_out_of_orderness_ms: bound,
            },
        ));
        // Blank the clause and one adjacent comma.
        let mut first = k;
        let mut last = end - 1;
        if k > 0 && matches!(tokens[sig[k - 1]].token, Token::Comma) {
            first = k - 1;
        } else if end < sig.len() && matches!(tokens[sig[end]].token, Token::Comma) {
            last = end;
        }
        let from = offsets.byte(&tokens[sig[first]], false);
        let to = offsets.byte(&tokens[sig[last]], true);
        for b in &mut blank[from..to] {
            *b = true;
        }
        k = end;
    }
    let text: String = sql
        .char_indices()
        .map(|(i, c)| if blank[i] && c != '\n' { ' ' } else { c })
        .collect();
    Ok((text, found))
}

/// The expression of `WATERMARK FOR column AS …`, from significant token
/// `expr_first` to the next comma or closing parenthesis at depth 0: its
/// bound in milliseconds, and where it ends.
fn watermark_expression(
    tokens: &[TokenWithSpan],
    sig: &[usize],
    expr_first: usize,
    column: &str,
    line: u64,
) -> SqlResult<(i64, usize)> {
    let mut end = expr_first;
    let mut depth = 0i32;
    while end < sig.len() {
        match tokens[sig[end]].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => break,
            _ => {}
        }
        end += 1;
    }
    if end == expr_first {
        return Err(SqlError::at(
            line,
            format!("WATERMARK FOR {column} AS needs an expression"),
        ));
    }
    let expr_text: String = tokens[sig[expr_first]..sig[end - 1] + 1]
        .iter()
        .map(|t| t.token.to_string())
        .collect();
    Ok((watermark_bound(column, &expr_text, line)?, end))
}

fn is_word(t: &TokenWithSpan, keyword: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// `col` or `col - INTERVAL '...' unit`: the bound in milliseconds.
fn watermark_bound(column: &str, text: &str, line: u64) -> SqlResult<i64> {
    let bad = |why: String| {
        SqlError::at(
            line,
            format!(
                "WATERMARK FOR {column} AS {text}: {why}; write {column} - INTERVAL '2' SECOND (or just {column} for in-order data)"
            ),
        )
    };
    let expr = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| bad(e.to_string()))?;
    let is_column = |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if ident_name(i) == column);
    // Parentheses change nothing: `AS (ts - INTERVAL '1' SECOND)`.
    let mut expr = &expr;
    while let SqlExpr::Nested(inner) = expr {
        expr = inner;
    }
    match expr {
        e if is_column(e) => Ok(0),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_column(left) => match right.as_ref() {
            SqlExpr::Interval(interval) => {
                let ms = interval_ms(interval).map_err(bad)?;
                if ms < 0 {
                    return Err(bad("the interval must not be negative".into()));
                }
                Ok(ms)
            }
            _ => Err(bad("the bound must be an INTERVAL".into())),
        },
        _ => Err(bad(format!("the expression must be based on {column}"))),
    }
}

/// Byte offsets of line starts, to turn token locations into text ranges.
struct LineOffsets {
    starts: Vec<usize>,
    text: Vec<(usize, char)>,
}

impl LineOffsets {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        for (i, c) in sql.char_indices() {
            if c == '\n' {
                starts.push(i + 1);
            }
        }
        Self {
            starts,
            text: sql.char_indices().collect(),
        }
    }

    /// Byte offset where `token` starts (or ends, exclusive).
    fn byte(&self, token: &TokenWithSpan, end: bool) -> usize {
        let loc = if end {
            token.span.end
        } else {
            token.span.start
        };
        let line_start = self.starts[(loc.line as usize)
            .saturating_sub(1)
            .min(self.starts.len() - 1)];
        // Columns count characters from 1.
        let first = self.text.partition_point(|(i, _)| *i < line_start);
        let idx = first + (loc.column as usize).saturating_sub(1);
        self.text
            .get(idx)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| self.text.last().map(|(i, c)| i + c.len_utf8()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_clause_is_cut_and_lines_are_kept() {
        let sql = "CREATE TABLE bid (\n  auction BIGINT,\n  date_time TIMESTAMP(3),\n  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND\n) WITH (connector = 'nexmark', kind = 'bid');\nSELEC 1;";
        let err = parse_script(sql).unwrap_err().to_string();
        // The syntax error on line 6 is still reported on line 6.
        assert!(err.contains("line 6"), "{err}");
        let ok = parse_script(&sql.replace("SELEC 1;", "")).unwrap();
        let ScriptStatement::CreateTable(t) = &ok[0].item else {
            panic!()
        };
        assert_eq!(
            t.watermark,
            Some(WatermarkDecl {
                column: "date_time".into(),
                max_out_of_orderness_ms: 4000
            })
        );
        assert_eq!(t.columns.len(), 2);
        assert_eq!(
            t.options,
            vec![
                ("connector".to_string(), "nexmark".to_string()),
                ("kind".to_string(), "bid".to_string())
            ]
        );
    }

    #[test]
    fn watermark_alone_in_the_column_list() {
        let sql = "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '500' MILLISECOND) WITH (connector = 'nexmark');";
        let ok = parse_script(sql).unwrap();
        let ScriptStatement::CreateTable(t) = &ok[0].item else {
            panic!()
        };
        assert!(t.columns.is_empty());
        assert_eq!(t.watermark.as_ref().unwrap().max_out_of_orderness_ms, 500);
    }

    /// Flink's forms: no `AS` (no out-of-orderness), and the expression in
    /// parentheses; anything else after the column is refused.
    #[test]
    fn watermark_without_as_or_in_parentheses() {
        for (clause, ms) in [
            ("WATERMARK FOR ts", 0),
            ("WATERMARK FOR ts AS (ts - INTERVAL '1' SECOND)", 1000),
            ("WATERMARK FOR ts AS ((ts))", 0),
        ] {
            for sql in [
                format!("CREATE TABLE t (ts TIMESTAMP, {clause}) WITH (connector = 'nexmark');"),
                format!("CREATE TABLE t ({clause}, ts TIMESTAMP) WITH (connector = 'nexmark');"),
            ] {
                let ok = parse_script(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let ScriptStatement::CreateTable(t) = &ok[0].item else {
                    panic!()
                };
                assert_eq!(t.columns.len(), 1, "{sql}");
                let w = t.watermark.as_ref().unwrap();
                assert_eq!((w.column.as_str(), w.max_out_of_orderness_ms), ("ts", ms));
            }
        }
        let sql =
            "CREATE TABLE t (ts TIMESTAMP, WATERMARK FOR ts BY 5) WITH (connector = 'nexmark');";
        let err = parse_script(sql).unwrap_err().to_string();
        assert!(err.contains("expected AS after WATERMARK FOR ts"), "{err}");
    }

    #[test]
    fn bad_watermark_expression_says_what_to_write() {
        let sql = "CREATE TABLE t (ts TIMESTAMP, WATERMARK FOR ts AS other - INTERVAL '1' SECOND) WITH (connector='nexmark');";
        let err = parse_script(sql).unwrap_err().to_string();
        assert!(err.contains("ts - INTERVAL '2' SECOND"), "{err}");
    }

    #[test]
    fn set_insert_and_view_statements() {
        let sql = "SET parallelism = 2;\nSET latency_target = '1ms';\nCREATE VIEW v AS SELECT 1 AS x;\nINSERT INTO out SELECT x FROM v;";
        let s = parse_script(sql).unwrap();
        assert!(
            matches!(&s[0].item, ScriptStatement::Set { name, value } if name == "parallelism" && value == "2")
        );
        assert!(matches!(&s[1].item, ScriptStatement::Set { value, .. } if value == "1ms"));
        assert!(matches!(&s[2].item, ScriptStatement::CreateView { name, .. } if name == "v"));
        assert!(matches!(&s[3].item, ScriptStatement::Insert { table, .. } if table == "out"));
        assert_eq!(s[3].line, 4);
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse_script("SET parallelism = 2;\nINSERT INTO out SELEC x FROM v;")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    #[test]
    fn other_statements_are_refused_by_name() {
        let err = parse_script("DROP TABLE x;").unwrap_err().to_string();
        assert!(err.contains("DROP TABLE x"), "{err}");
    }
}
