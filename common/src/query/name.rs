//! Naming rules for collections and indexes, and their validation.

use super::error::{Position, QueryError};

/// Longest allowed name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a collection name: 1 to 64 ASCII letters, digits, `_` and `-`, starting with a
/// letter or `_`; names starting with `__` are reserved for the system.
pub fn validate_collection_name(name: &str) -> Result<(), QueryError> {
    check_name("collection", name, None)
}

/// Checks a name of `kind` (`collection` or `index`); `at` is where it appears in a query.
pub(crate) fn check_name(
    kind: &'static str,
    name: &str,
    at: Option<Position>,
) -> Result<(), QueryError> {
    let error = |reason: String| QueryError::InvalidName {
        at,
        kind,
        name: super::error::excerpt(name),
        reason,
    };
    let len = name.chars().count();
    if len == 0 {
        return Err(error("must not be empty".to_owned()));
    }
    if len > MAX_NAME_LEN {
        return Err(error(format!(
            "must be at most {MAX_NAME_LEN} characters long, it has {len}"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(error(format!(
            "may only contain ASCII letters, digits, '_' and '-', found '{bad}'"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return Err(error("must start with an ASCII letter or '_'".to_owned()));
    }
    if name.starts_with("__") {
        return Err(error("names starting with '__' are reserved".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match validate_collection_name(name) {
            Err(QueryError::InvalidName { reason, .. }) => reason,
            other => panic!("expected an invalid name, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_names_are_valid() {
        for name in ["cars", "_private", "a-b_c9", &"x".repeat(64)] {
            assert_eq!(validate_collection_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(reason(""), "must not be empty");
        assert_eq!(
            reason(&"x".repeat(65)),
            "must be at most 64 characters long, it has 65"
        );
        assert_eq!(
            reason("a.b"),
            "may only contain ASCII letters, digits, '_' and '-', found '.'"
        );
        assert_eq!(reason("9lives"), "must start with an ASCII letter or '_'");
        assert_eq!(reason("-x"), "must start with an ASCII letter or '_'");
        assert_eq!(reason("__system"), "names starting with '__' are reserved");
    }

    #[test]
    fn message_names_the_collection() {
        let err = validate_collection_name("__x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid collection name '__x': names starting with '__' are reserved"
        );
    }
}
