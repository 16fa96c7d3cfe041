//! One rule for text people type and ids other systems hand us (chat bodies, stream
//! titles, user ids from tokens and from paths):
//!
//! - **Forbidden anywhere**: control characters (line breaks included), the Unicode line
//!   and paragraph separators (U+2028, U+2029), bidirectional embeddings, overrides and
//!   isolates (U+202A–U+202E, U+2066–U+2069), and tag characters (U+E0000–U+E007F) —
//!   characters that change how *other* text is shown or hide content.
//! - **At least one visible character**: text made only of whitespace and invisible
//!   characters (zero-width spaces and joiners, word joiners, the byte-order mark, soft
//!   hyphens, Hangul fillers, variation selectors, …) is empty.
//!
//! Documented in docs/api.md ("Text rules").

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// Nothing visible in it.
    Empty,
    /// It contains a forbidden character.
    Forbidden,
}

/// Characters refused anywhere in a text.
pub fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Characters that show nothing on their own.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// Applies the rule.
pub fn check(s: &str) -> Result<(), TextError> {
    if s.chars().any(is_forbidden) {
        return Err(TextError::Forbidden);
    }
    if s.chars().all(is_invisible) {
        return Err(TextError::Empty);
    }
    Ok(())
}

/// Longest user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 128;

/// A user id (a token's `sub`, a path segment naming a user): the text rule, and at most
/// [`MAX_USER_ID_BYTES`] bytes.
pub fn valid_user_id(id: &str) -> bool {
    id.len() <= MAX_USER_ID_BYTES && check(id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_passes() {
        for ok in [
            "hi",
            "👟 50% off — today!",
            "é",
            " a ",
            "日本語",
            "a\u{200D}b",
            "🏳️‍🌈",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn invisible_only_text_is_empty() {
        for empty in [
            "",
            "   ",
            "\u{200B}",
            "\u{FEFF}\u{200B}",
            "\u{3164}",
            "\u{115F}\u{1160}",
            "\u{00AD}",
            "\u{FE0F}",
        ] {
            assert_eq!(check(empty), Err(TextError::Empty), "{empty:?}");
        }
    }

    #[test]
    fn hiding_and_reordering_characters_are_refused() {
        for bad in [
            "a\nb",
            "a\u{2028}b",
            "a\u{2029}b",
            "x\u{202E}y",
            "x\u{2067}y",
            "a\u{E0041}b",
            "\u{0007}",
            "a\u{0085}b",
        ] {
            assert_eq!(check(bad), Err(TextError::Forbidden), "{bad:?}");
        }
    }
}
