//! A small PostgreSQL lexer: the one place that knows where strings, quoted identifiers, dollar
//! quotes and comments begin and end. The statement splitter, relation discovery (for `tsql!`)
//! and the `RETURNING` check of `execute_and_return_id` all read SQL through it.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or unquoted name (may contain `$` after the first character).
    Word,
    /// A `"quoted"` identifier, quotes included.
    QuotedIdent,
    /// A string (`'…'`, `E'…'`) or a dollar-quoted body (`$$…$$`, `$tag$…$tag$`).
    Literal,
    /// A number (`42`, `1.5e3`).
    Number,
    /// A `-- …` or (nested) `/* … */` comment.
    Comment,
    /// Any other single character: operators, `;`, `(`, `,`, `.`, `$` of `$1` …
    Punct(u8),
}

/// One token: its kind, its text and its byte offset in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: TokenKind,
    /// Its text as written.
    pub text: &'a str,
    /// Byte offset of `text` in the input.
    pub start: usize,
}

impl Token<'_> {
    /// Whether this is the keyword `kw` (case-insensitive).
    pub fn is_word(&self, kw: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// The name a word or quoted identifier stands for: unquoted words fold to lower case,
    /// quoted ones are unescaped. `None` for other tokens.
    pub fn name(&self) -> Option<String> {
        match self.kind {
            TokenKind::Word => Some(self.text.to_lowercase()),
            TokenKind::QuotedIdent => {
                let inner = self.text.strip_prefix('"')?;
                let inner = inner.strip_suffix('"').unwrap_or(inner);
                Some(inner.replace("\"\"", "\""))
            }
            _ => None,
        }
    }
}

/// The tokens of `sql`, white space skipped. An unclosed string, quote or comment runs to the
/// end of the text.
///
/// ```
/// use pgdbm_core::sql_lex::{tokens, TokenKind};
/// let kinds: Vec<TokenKind> = tokens("SELECT 'a;b', $x$ ; $x$ -- c\n;").map(|t| t.kind).collect();
/// assert_eq!(kinds, [TokenKind::Word, TokenKind::Literal, TokenKind::Punct(b','),
///                    TokenKind::Literal, TokenKind::Comment, TokenKind::Punct(b';')]);
/// ```
pub fn tokens(sql: &str) -> Tokens<'_> {
    Tokens { sql, pos: 0 }
}

/// Iterator returned by [`tokens`].
#[derive(Clone, Debug)]
pub struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.sql.as_bytes();
        // White space as Rust (and Python's strip) sees it, Unicode included.
        let rest = &self.sql[self.pos..];
        let i = self.pos + (rest.len() - rest.trim_start().len());
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        let start = i;
        let c = b[i];
        let word_start = i == 0 || !is_ident_byte(b[i - 1]);
        let (kind, end) = match c {
            b'\'' => (TokenKind::Literal, skip_quoted(b, i, b'\'', false)),
            b'"' => (TokenKind::QuotedIdent, skip_quoted(b, i, b'"', false)),
            b'-' if b.get(i + 1) == Some(&b'-') => (TokenKind::Comment, skip_line_comment(b, i)),
            b'/' if b.get(i + 1) == Some(&b'*') => (TokenKind::Comment, skip_block_comment(b, i)),
            b'$' if word_start => match dollar_tag(b, i) {
                Some(len) => {
                    let tag = &b[i..i + len];
                    let end = find(b, i + len, tag).map_or(b.len(), |e| e + len);
                    (TokenKind::Literal, end)
                }
                None => (TokenKind::Punct(c), i + 1),
            },
            _ if c.is_ascii_digit() => {
                let mut j = i;
                while j < b.len() && (is_ident_byte(b[j]) || b[j] == b'.') {
                    j += 1;
                }
                (TokenKind::Number, j)
            }
            _ if is_ident_start(c) => {
                let end = word_end(b, i);
                // `E'…'` is a string with backslash escapes only when `E` stands alone.
                if end - i == 1 && matches!(c, b'E' | b'e') && b.get(end) == Some(&b'\'') {
                    (TokenKind::Literal, skip_quoted(b, end, b'\'', true))
                } else {
                    (TokenKind::Word, end)
                }
            }
            _ => (TokenKind::Punct(c), i + 1),
        };
        let end = end.min(b.len());
        self.pos = end;
        Some(Token {
            kind,
            text: &self.sql[start..end],
            start,
        })
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The end of the identifier or keyword starting at `i` (identifiers may contain `$`).
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
        i += 1;
    }
    i
}

/// The index of the `\n` ending the line comment at `i` (or the end of the text).
fn skip_line_comment(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p)
}

/// The index just past the block comment opening at `i` (PostgreSQL's nest), or the end of the
/// text if it is unclosed.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The index just past the closing quote (or the end of the text if unclosed).
fn skip_quoted(b: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The length of a dollar-quote tag (`$$` or `$tag$`) starting at `i`; `None` for `$1`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && is_ident_byte(b[j]) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(sql: &str) -> Vec<(TokenKind, &str)> {
        tokens(sql).map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn quotes_comments_and_dollar_bodies_are_single_tokens() {
        use TokenKind::*;
        assert_eq!(
            lex(
                "SELECT 'it''s', E'a\\'b', \"we\"\"ird\", $1, $f$ x; $f$, a$b /* x /* y */ z */ -- end"
            ),
            [
                (Word, "SELECT"),
                (Literal, "'it''s'"),
                (Punct(b','), ","),
                (Literal, "E'a\\'b'"),
                (Punct(b','), ","),
                (QuotedIdent, "\"we\"\"ird\""),
                (Punct(b','), ","),
                (Punct(b'$'), "$"),
                (Number, "1"),
                (Punct(b','), ","),
                (Literal, "$f$ x; $f$"),
                (Punct(b','), ","),
                (Word, "a$b"),
                (Comment, "/* x /* y */ z */"),
                (Comment, "-- end"),
            ]
        );
    }

    #[test]
    fn names_fold_or_unquote() {
        let t: Vec<_> = tokens("Users \"MixedCase\" \"a\"\"b\"").collect();
        assert_eq!(t[0].name().as_deref(), Some("users"));
        assert_eq!(t[1].name().as_deref(), Some("MixedCase"));
        assert_eq!(t[2].name().as_deref(), Some("a\"b"));
        assert!(t[0].is_word("USERS"));
    }

    #[test]
    fn unclosed_pieces_run_to_the_end() {
        assert_eq!(
            lex("SELECT 'a; b"),
            [(TokenKind::Word, "SELECT"), (TokenKind::Literal, "'a; b")]
        );
        assert_eq!(lex("/* open"), [(TokenKind::Comment, "/* open")]);
        assert_eq!(lex("$x$ open"), [(TokenKind::Literal, "$x$ open")]);
    }
}
