//! LIKE pattern matching: `%` matches any run of characters, `_` exactly one, and a
//! backslash makes the next character literal (`\%`, `\_`, `\\`). Case-sensitive, on
//! Unicode scalar values, without regular expressions.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    /// `%`
    Any,
    /// `_`
    One,
    Char(char),
}

fn atoms(pattern: &str) -> Vec<Atom> {
    let mut atoms = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        atoms.push(match c {
            '%' => Atom::Any,
            '_' => Atom::One,
            // A trailing backslash stands for itself.
            '\\' => Atom::Char(chars.next().unwrap_or('\\')),
            c => Atom::Char(c),
        });
    }
    atoms
}

/// Whether `text` matches the LIKE `pattern` as a whole. Runs in O(text × pattern) time at
/// worst, with no recursion.
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern = atoms(pattern);
    let (mut t, mut p) = (0, 0);
    // The last `%` seen and the text position it currently stands up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Atom::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Atom::One) => {
                p += 1;
                t += 1;
            }
            Some(Atom::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                // Let the last `%` swallow one more character and retry.
                Some((star, start)) => {
                    backtrack = Some((star, start + 1));
                    p = star + 1;
                    t = start + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|a| *a == Atom::Any)
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn percent_matches_any_run_and_underscore_one_character() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "%"));
        assert!(like("", "%"));
        assert!(like("hello", "h_llo"));
        assert!(like("hello", "%ll%"));
        assert!(like("hello", "hello"));
        assert!(!like("hello", "h_lo"));
        assert!(!like("hello", "hell"));
        assert!(!like("", "_"));
        assert!(!like("Hello", "hello"));
    }

    #[test]
    fn backtracking_finds_later_matches() {
        assert!(like("abcabcabd", "%abd"));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
        assert!(like("mississippi", "m%iss%pi"));
    }

    #[test]
    fn underscore_is_one_unicode_character() {
        assert!(like("é", "_"));
        assert!(like("naïve", "na_ve"));
    }

    #[test]
    fn backslash_escapes_wildcards() {
        assert!(like("50%", "50\\%"));
        assert!(!like("500", "50\\%"));
        assert!(like("a_b", "a\\_b"));
        assert!(!like("axb", "a\\_b"));
        assert!(like("a\\", "a\\"));
    }

    #[test]
    fn pathological_pattern_stays_fast() {
        let text = "a".repeat(2_000);
        let pattern = format!("{}b", "%a".repeat(50));
        assert!(!like(&text, &pattern));
    }
}
