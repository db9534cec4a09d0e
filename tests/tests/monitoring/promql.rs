//! The metric names a PromQL expression reads, without a PromQL parser: a tokenizer
//! and the few rules that tell a metric name from everything else that is spelt like
//! one (functions, aggregations, keywords, label names, Grafana variables).
//!
//! It errs on the side of failing: what it cannot classify (a Grafana variable where a
//! metric name would be, a `__name__` regex) is an error, never silently skipped, so a
//! query that names no known metric cannot pass unnoticed.

use std::collections::BTreeSet;

/// Binary operators and modifiers spelt as words.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number,
    /// A Grafana template variable (`$name`, `${name}`, `[[name]]`).
    Variable(String),
    Punct(char),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            // A comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if matches!(c, '"' | '\'' | '`') {
            let quote = c;
            let mut value = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(format!("unterminated string in {expr:?}"));
                };
                i += 1;
                if d == quote {
                    break;
                }
                if d == '\\' && quote != '`' {
                    if let Some(&escaped) = chars.get(i) {
                        value.push(escaped);
                        i += 1;
                    }
                    continue;
                }
                value.push(d);
            }
            tokens.push(Token::Str(value));
        } else if c == '$' {
            i += 1;
            let start = i;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
            tokens.push(Token::Variable(
                chars[start..i.min(chars.len())].iter().collect(),
            ));
        } else if c == '[' && chars.get(i + 1) == Some(&'[') {
            let start = i;
            while i < chars.len() && !(chars[i] == ']' && chars.get(i + 1) == Some(&']')) {
                i += 1;
            }
            i += 2;
            tokens.push(Token::Variable(
                chars[start..i.min(chars.len())].iter().collect(),
            ));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), hex and exponents: one token.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_'))
            {
                // An exponent's sign belongs to the number.
                if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('+' | '-')) {
                    i += 1;
                }
                i += 1;
            }
            tokens.push(Token::Number);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    Ok(tokens)
}

/// The metric names `expr` (PromQL, possibly with Grafana variables in label values
/// and ranges) selects. Errors on what it cannot check.
pub(crate) fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let tokens = tokenize(expr)?;
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Punct('{') => {
                // Label matchers: `name op "value"`, comma separated. Only `__name__`
                // names a metric.
                i += 1;
                while i < tokens.len() && tokens[i] != Token::Punct('}') {
                    if tokens[i] == Token::Ident("__name__".to_owned()) {
                        match (tokens.get(i + 1), tokens.get(i + 2)) {
                            (Some(Token::Punct('=')), Some(Token::Str(name))) => {
                                names.insert(name.clone());
                            }
                            _ => {
                                return Err(format!(
                                    "{expr:?}: only __name__=\"...\" is understood"
                                ));
                            }
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            Token::Punct('[') => {
                // A range or subquery: durations and variables only.
                while i < tokens.len() && tokens[i] != Token::Punct(']') {
                    i += 1;
                }
                i += 1;
            }
            Token::Ident(word) if LABEL_LIST_KEYWORDS.contains(&word.as_str()) => {
                i += 1;
                // `group_left` may stand alone; the others take a list.
                if tokens.get(i) == Some(&Token::Punct('(')) {
                    while i < tokens.len() && tokens[i] != Token::Punct(')') {
                        i += 1;
                    }
                    i += 1;
                }
            }
            Token::Ident(word) => {
                let next = tokens.get(i + 1);
                let called = next == Some(&Token::Punct('('));
                let aggregated =
                    matches!(next, Some(Token::Ident(n)) if n == "by" || n == "without");
                let keyword = KEYWORDS.contains(&word.as_str())
                    || word.eq_ignore_ascii_case("inf")
                    || word.eq_ignore_ascii_case("nan");
                if !called && !aggregated && !keyword {
                    names.insert(word.clone());
                }
                i += 1;
            }
            Token::Variable(v) => {
                return Err(format!(
                    "{expr:?}: the variable {v} stands where a metric or number would; \
                     its metric cannot be checked"
                ));
            }
            Token::Str(_) | Token::Number | Token::Punct(_) => i += 1,
        }
    }
    Ok(names)
}

/// The metric names of a Grafana Prometheus variable query: `label_values(expr,
/// label)`, `label_values(label)` (none), `query_result(expr)`.
pub(crate) fn variable_query_metric_names(query: &str) -> Result<BTreeSet<String>, String> {
    let query = query.trim();
    let inner = |prefix: &str| {
        query
            .strip_prefix(prefix)
            .and_then(|q| q.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(args) = inner("label_values(") {
        // The label is the last argument; a comma inside the selector is in braces.
        let mut depth = 0i32;
        let mut split = None;
        for (at, c) in args.char_indices() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 0 => split = Some(at),
                _ => {}
            }
        }
        return match split {
            Some(at) => metric_names(&args[..at]),
            None => Ok(BTreeSet::new()),
        };
    }
    if let Some(expr) = inner("query_result(") {
        return metric_names(expr);
    }
    Err(format!(
        "variable query {query:?}: only label_values(...) and query_result(...) are understood"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .collect()
    }

    #[test]
    fn finds_metrics_among_functions_aggregations_keywords_and_labels() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (namespace, le) (rate(a_seconds_bucket{le="0.1", pod=~"$pod"}[$__rate_interval]))) > 0.25"#
            ),
            ["a_seconds_bucket"]
        );
        assert_eq!(
            names("denylist_age_seconds and denylist_stale == 1"),
            ["denylist_age_seconds", "denylist_stale"]
        );
        assert_eq!(
            names(
                r#"count by (ns) (sum without (result) (increase(x_total{result="error"}[15m])) > 0 unless sum without (result) (increase(y_total[15m])) > 0)"#
            ),
            ["x_total", "y_total"]
        );
        assert_eq!(
            names(
                "sum(rate(a[5m])) by (le) / on (pod) group_left count(b offset 30m) or vector(0)"
            ),
            ["a", "b"]
        );
        assert_eq!(
            names("topk(10, clamp_min(a - b, 0)) * 1e-3 + Inf - NaN"),
            ["a", "b"]
        );
        assert_eq!(names(r#"{__name__="by_name", job="x"}"#), ["by_name"]);
        assert_eq!(
            names(
                r#"label_replace(up, "dst", "$1", "src", "(.*)") # a comment naming nothing_real"#
            ),
            ["up"]
        );
        assert_eq!(names("a[5m:1m] @ 1609746000 offset 1h30m"), ["a"]);
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        assert!(metric_names("$metric").is_err());
        assert!(metric_names(r#"{__name__=~"denylist_.*"}"#).is_err());
        assert!(metric_names(r#"sum(rate(x{a="unterminated}[5m]))"#).is_err());
        assert!(variable_query_metric_names("metrics(denylist_.*)").is_err());
    }

    #[test]
    fn reads_grafana_variable_queries() {
        let names = |q: &str| -> Vec<String> {
            variable_query_metric_names(q)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .collect()
        };
        assert_eq!(
            names(r#"label_values(denylist_sequence{namespace=~"$namespace", a="b"}, pod)"#),
            ["denylist_sequence"]
        );
        assert_eq!(names("label_values(namespace)"), Vec::<String>::new());
        assert_eq!(names("query_result(topk(5, a))"), ["a"]);
    }
}
