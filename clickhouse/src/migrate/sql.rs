//! Just enough SQL lexing to split a migration file into statements and to find the handful of
//! places the cluster renderer rewrites (object names, table references, engines).
//!
//! It knows ClickHouse's quoting: `'…'` strings (backslash escapes and `''`), `"…"` and `` `…` ``
//! identifiers, `--` line comments and `/* … */` block comments. Nothing else needs to be
//! understood: a `;` outside those ends a statement.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Space,
    LineComment,
    BlockComment,
    /// `'…'`
    Str,
    /// `"…"` or `` `…` ``
    QuotedIdent,
    /// Identifier, keyword or number (`[A-Za-z0-9_]` runs, plus `$`, `{`, `}` for placeholders).
    Word,
    /// Any other single character.
    Punct,
}

/// A token: its kind and where it is in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text(self, src: &str) -> &str {
        &src[self.start..self.end]
    }

    pub fn is_trivia(self) -> bool {
        matches!(
            self.kind,
            Kind::Space | Kind::LineComment | Kind::BlockComment
        )
    }

    /// Case-insensitive keyword test.
    pub fn is_word(self, src: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(src).eq_ignore_ascii_case(word)
    }

    pub fn is_punct(self, src: &str, c: char) -> bool {
        self.kind == Kind::Punct && self.text(src).starts_with(c)
    }
}

/// Tokens of `src`; `Err` names the construct left open at the end.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
                Kind::Space
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                Kind::LineComment
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                loop {
                    if i + 1 >= bytes.len() {
                        return Err("unterminated /* comment".into());
                    }
                    if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
                Kind::BlockComment
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(format!("unterminated {} quote", c as char)),
                        Some(b'\\') => i += 2,
                        Some(&q) if q == c => {
                            // A doubled quote is an escaped quote.
                            if bytes.get(i + 1) == Some(&c) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                if c == b'\'' {
                    Kind::Str
                } else {
                    Kind::QuotedIdent
                }
            }
            c if is_word_byte(c) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                // One character (which may be multi-byte UTF-8).
                i += src[i..].chars().next().map_or(1, char::len_utf8);
                Kind::Punct
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i.min(bytes.len()),
        });
    }
    Ok(tokens)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'{' | b'}')
}

/// One statement of a migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The SQL, without its leading comments and without the `;`.
    pub sql: String,
    /// Only part of `--cluster` runs (the statement's leading comments have `-- cluster-only`).
    pub cluster_only: bool,
    /// `-- unless-column: table.column`: skipped when the database already has that column
    /// (18.16 has no `ADD COLUMN IF NOT EXISTS`, and a re-run file must not fail on it).
    pub unless_column: Option<(String, String)>,
    /// `-- if-table: table`: run only while the database has that table (a `RENAME` that a
    /// re-run file must not repeat once it is done).
    pub if_table: Option<String>,
}

/// Splits `src` at top-level `;`. Comments before a statement belong to it (and carry its
/// directives); a trailing part with only comments is dropped.
pub(crate) fn split_statements(src: &str) -> Result<Vec<Statement>, String> {
    let tokens = tokenize(src)?;
    let mut statements = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    for token in tokens {
        if token.is_punct(src, ';') {
            push_statement(src, &current, &mut statements);
            current.clear();
        } else {
            current.push(token);
        }
    }
    push_statement(src, &current, &mut statements);
    Ok(statements)
}

fn push_statement(src: &str, tokens: &[Token], out: &mut Vec<Statement>) {
    let Some(first) = tokens.iter().position(|t| !t.is_trivia()) else {
        return;
    };
    let directive = |t: &Token| {
        (t.kind == Kind::LineComment).then(|| t.text(src).trim_start_matches('-').trim())
    };
    let cluster_only = tokens[..first]
        .iter()
        .any(|t| directive(t) == Some("cluster-only"));
    let unless_column = tokens[..first].iter().find_map(|t| {
        let (table, column) = directive(t)?
            .strip_prefix("unless-column:")?
            .trim()
            .split_once('.')?;
        Some((table.trim().to_string(), column.trim().to_string()))
    });
    let if_table = tokens[..first].iter().find_map(|t| {
        let table = directive(t)?.strip_prefix("if-table:")?.trim();
        (!table.is_empty()).then(|| table.to_string())
    });
    let start = tokens[first].start;
    let end = tokens
        .iter()
        .rev()
        .find(|t| !t.is_trivia())
        .map_or(start, |t| t.end);
    out.push(Statement {
        sql: src[start..end].to_string(),
        cluster_only,
        unless_column,
        if_table,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let src = "-- header\nCREATE TABLE a (s String DEFAULT ';') ENGINE = Log;\n\
                   /* ; */ SELECT 'it''s;', \"x;y\", `a;b` -- ; here\n;\n-- cluster-only\n\
                   CREATE TABLE d AS a ENGINE = Distributed(c, db, a);\n-- trailing comment\n";
        let stmts = split_statements(src).unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(
            stmts[0].sql,
            "CREATE TABLE a (s String DEFAULT ';') ENGINE = Log"
        );
        assert!(!stmts[0].cluster_only);
        assert_eq!(stmts[1].sql, "SELECT 'it''s;', \"x;y\", `a;b`");
        assert_eq!(
            stmts[2].sql,
            "CREATE TABLE d AS a ENGINE = Distributed(c, db, a)"
        );
        assert!(stmts[2].cluster_only);
    }

    #[test]
    fn backslash_escapes_do_not_end_strings() {
        let stmts = split_statements(r"SELECT 'a\';b'; SELECT 2").unwrap();
        assert_eq!(stmts.len(), 2);
        assert_eq!(stmts[0].sql, r"SELECT 'a\';b'");
    }

    #[test]
    fn unterminated_constructs_are_errors() {
        assert!(split_statements("SELECT 'abc").is_err());
        assert!(split_statements("SELECT /* abc").is_err());
    }
}
