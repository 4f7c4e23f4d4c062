//! Errors of the query language: one enum for lexing, parsing, name validation and
//! parameter binding, plus the source positions the syntax errors carry.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// A place in the query text: 1-based line and column, the column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `src`.
    pub(crate) fn of_offset(src: &str, offset: usize) -> Self {
        let mut pos = Position { line: 1, column: 1 };
        for (i, c) in src.char_indices() {
            if i >= offset {
                break;
            }
            if c == '\n' {
                pos.line += 1;
                pos.column = 1;
            } else {
                pos.column += 1;
            }
        }
        pos
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Everything that can go wrong before a statement is evaluated.
///
/// Evaluation itself never fails: type mismatches inside a document make a comparison
/// unknown rather than an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The parser met a token it did not expect.
    #[error("{at}: expected {expected}, found {found}")]
    Unexpected {
        /// Where the unexpected token starts.
        at: Position,
        /// What the grammar allows here, e.g. `FROM` or `an expression`.
        expected: String,
        /// The token met, quoted as written, or `end of input`.
        found: String,
    },
    /// Malformed text: unterminated string, bad number, expression nested too deeply...
    #[error("{at}: {message}")]
    Invalid {
        /// Where the problem starts.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A collection or index name that breaks the naming rules.
    #[error("{}invalid {kind} name '{name}': {reason}", at_prefix(.at.as_ref()))]
    InvalidName {
        /// Where the name is in the query text, when it comes from one.
        at: Option<Position>,
        /// `collection` or `index`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A `:name` parameter with no value in the parameter map.
    #[error("unknown parameter :{name}")]
    UnknownParameter {
        /// The parameter name, without the colon.
        name: String,
    },
    /// A value of the wrong type where the statement needs a specific one.
    #[error("{context} must be {expected}, found {found}")]
    WrongType {
        /// Which part of the statement, e.g. `LIMIT parameter :n`.
        context: String,
        /// The type needed, e.g. `a non-negative integer`.
        expected: &'static str,
        /// The value given, described, e.g. `number -1`.
        found: String,
    },
}

fn at_prefix(at: Option<&Position>) -> String {
    at.map(|p| format!("{p}: ")).unwrap_or_default()
}

/// At most this many characters of user text are quoted in an error message.
const EXCERPT_CHARS: usize = 40;

/// `text` cut to a length fit for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A short description of a JSON value for error messages: `number -1`, `string 'a'`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string '{}'", excerpt(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters_from_one() {
        let src = "SELECT *\nFROM é x";
        assert_eq!(Position::of_offset(src, 0), Position { line: 1, column: 1 });
        let x = src.find('x').unwrap();
        assert_eq!(Position::of_offset(src, x), Position { line: 2, column: 8 });
    }

    #[test]
    fn invalid_name_message_has_position_only_when_known() {
        let err = QueryError::InvalidName {
            at: None,
            kind: "collection",
            name: "__x".to_owned(),
            reason: "reserved".to_owned(),
        };
        assert_eq!(err.to_string(), "invalid collection name '__x': reserved");
        let err = QueryError::InvalidName {
            at: Some(Position {
                line: 1,
                column: 15,
            }),
            kind: "collection",
            name: "__x".to_owned(),
            reason: "reserved".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "line 1, column 15: invalid collection name '__x': reserved"
        );
    }

    #[test]
    fn long_text_is_cut_in_messages() {
        let long = "a".repeat(100);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 3);
        assert_eq!(describe(&Value::from("ab")), "string 'ab'");
    }
}
