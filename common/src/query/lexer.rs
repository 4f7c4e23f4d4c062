//! Lexer: splits query text into tokens with byte spans. Owns quoting rules, escapes and
//! number syntax; keywords are not recognised here (the parser matches words
//! case-insensitively in context).

use super::error::{Position, QueryError};

/// How an identifier was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quote {
    /// `` `name` ``
    Backtick,
    /// `"name"`
    Double,
}

/// Punctuation and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sym {
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Semicolon,
    Colon,
    Star,
    Plus,
    Minus,
    Slash,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An unquoted identifier or keyword: `[A-Za-z_][A-Za-z0-9_]*`.
    Word(String),
    /// A quoted identifier, quotes removed and doubled quotes unescaped.
    Quoted(String, Quote),
    /// A single-quoted string literal, unescaped.
    Str(String),
    /// An unsigned number as written: `12`, `1.5`, `2e-3`.
    Number(String),
    Sym(Sym),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// Byte offset of the first character.
    pub(crate) start: usize,
    /// Byte offset just past the last character.
    pub(crate) end: usize,
}

/// The tokens of `src`, always ending with one [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let Some(c) = lexer.peek() else {
            tokens.push(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
            return Ok(tokens);
        };
        let tok = lexer.token(c)?;
        tokens.push(Token {
            tok,
            start,
            end: lexer.pos,
        });
    }
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer<'s> {
    src: &'s str,
    /// Byte offset of the next character.
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.bump();
        }
        hit
    }

    fn bump_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
    }

    fn skip_whitespace(&mut self) {
        self.bump_while(char::is_whitespace);
    }

    fn error(&self, offset: usize, message: String) -> QueryError {
        QueryError::Invalid {
            at: Position::of_offset(self.src, offset),
            message,
        }
    }

    fn token(&mut self, c: char) -> Result<Tok, QueryError> {
        let start = self.pos;
        if is_word_start(c) {
            self.bump_while(is_word_char);
            return Ok(Tok::Word(self.src[start..self.pos].to_owned()));
        }
        if c.is_ascii_digit() {
            return self.number();
        }
        let sym = match c {
            '\'' => return self.quoted('\'', "string literal").map(Tok::Str),
            '`' => {
                return self
                    .quoted('`', "quoted identifier")
                    .map(|s| Tok::Quoted(s, Quote::Backtick));
            }
            '"' => {
                return self
                    .quoted('"', "quoted identifier")
                    .map(|s| Tok::Quoted(s, Quote::Double));
            }
            '(' => Sym::LParen,
            ')' => Sym::RParen,
            '[' => Sym::LBracket,
            ']' => Sym::RBracket,
            '{' => Sym::LBrace,
            '}' => Sym::RBrace,
            ',' => Sym::Comma,
            '.' => Sym::Dot,
            ';' => Sym::Semicolon,
            ':' => Sym::Colon,
            '*' => Sym::Star,
            '+' => Sym::Plus,
            '-' => Sym::Minus,
            '/' => Sym::Slash,
            '=' => {
                self.bump();
                self.eat('=');
                return Ok(Tok::Sym(Sym::Eq));
            }
            '!' if self.peek_second() == Some('=') => {
                self.bump();
                Sym::Ne
            }
            '<' => {
                self.bump();
                return Ok(Tok::Sym(if self.eat('=') {
                    Sym::Le
                } else if self.eat('>') {
                    Sym::Ne
                } else {
                    Sym::Lt
                }));
            }
            '>' => {
                self.bump();
                return Ok(Tok::Sym(if self.eat('=') { Sym::Ge } else { Sym::Gt }));
            }
            other => return Err(self.error(start, format!("unexpected character '{other}'"))),
        };
        self.bump();
        Ok(Tok::Sym(sym))
    }

    /// Digits, an optional fraction and an optional exponent. A letter glued to the end
    /// (`12abc`) is an error rather than two tokens.
    fn number(&mut self) -> Result<Tok, QueryError> {
        let start = self.pos;
        self.bump_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.bump_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let rest = &self.src[self.pos + 1..];
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.starts_with(|c: char| c.is_ascii_digit()) {
                self.pos += rest.len() - digits.len() + 1;
                self.bump_while(|c| c.is_ascii_digit());
            }
        }
        if self.peek().is_some_and(is_word_char) {
            self.bump_while(is_word_char);
            return Err(self.error(
                start,
                format!("invalid number '{}'", &self.src[start..self.pos]),
            ));
        }
        Ok(Tok::Number(self.src[start..self.pos].to_owned()))
    }

    /// Text between two `quote`s, a doubled quote standing for one.
    fn quoted(&mut self, quote: char, what: &str) -> Result<String, QueryError> {
        let start = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(end) = rest.find(quote) else {
                return Err(self.error(start, format!("unterminated {what}")));
            };
            text.push_str(&rest[..end]);
            self.pos += end + 1;
            if !self.eat(quote) {
                return Ok(text);
            }
            text.push(quote);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn word(s: &str) -> Tok {
        Tok::Word(s.to_owned())
    }

    #[test]
    fn splits_words_symbols_and_literals() {
        assert_eq!(
            toks("a.b >= 'x''y' AND c<>1.5e3"),
            vec![
                word("a"),
                Tok::Sym(Sym::Dot),
                word("b"),
                Tok::Sym(Sym::Ge),
                Tok::Str("x'y".to_owned()),
                word("AND"),
                word("c"),
                Tok::Sym(Sym::Ne),
                Tok::Number("1.5e3".to_owned()),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn quoted_identifiers_keep_their_quote_kind() {
        assert_eq!(
            toks("`a``b` \"c\"\"d\""),
            vec![
                Tok::Quoted("a`b".to_owned(), Quote::Backtick),
                Tok::Quoted("c\"d".to_owned(), Quote::Double),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn both_not_equal_spellings_and_double_equals_are_accepted() {
        assert_eq!(
            toks("!= <> == ="),
            vec![
                Tok::Sym(Sym::Ne),
                Tok::Sym(Sym::Ne),
                Tok::Sym(Sym::Eq),
                Tok::Sym(Sym::Eq),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn number_followed_by_dot_word_is_not_a_fraction() {
        assert_eq!(
            toks("1.a"),
            vec![
                Tok::Number("1".to_owned()),
                Tok::Sym(Sym::Dot),
                word("a"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn spans_are_byte_offsets() {
        let tokens = tokenize("é  ab").unwrap_err();
        assert_eq!(
            tokens.to_string(),
            "line 1, column 1: unexpected character 'é'"
        );
        let tokens = tokenize("  ab").unwrap();
        assert_eq!((tokens[0].start, tokens[0].end), (2, 4));
    }

    #[test]
    fn unterminated_string_points_at_its_opening_quote() {
        let err = tokenize("SELECT 'abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1, column 8: unterminated string literal"
        );
    }

    #[test]
    fn letters_glued_to_a_number_are_rejected() {
        let err = tokenize("x = 12abc").unwrap_err();
        assert_eq!(err.to_string(), "line 1, column 5: invalid number '12abc'");
    }

    #[test]
    fn lone_exclamation_mark_is_rejected() {
        assert!(tokenize("a ! b").is_err());
    }
}
