//! GPT-2's byte ↔ character table, which byte-level BPE vocabularies are written in.
//!
//! Every byte gets a printable character: the printable Latin-1 bytes (`!`..`~`, `¡`..`¬`,
//! `®`..`ÿ`) stand for themselves, and the other 68 bytes (controls, space, DEL, NBSP, soft
//! hyphen), in increasing order, take U+0100 onwards. So a space is `Ġ` (U+0120) and a newline
//! `Ċ` (U+010A). The table is computed, not stored.

/// The character that stands for byte `b` in a byte-level vocabulary.
pub(crate) fn byte_to_char(b: u8) -> char {
    let code = match b {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u32::from(b),
        0x00..=0x20 => 0x100 + u32::from(b),
        0x7F..=0xA0 => 0x100 + 33 + u32::from(b - 0x7F),
        0xAD => 0x100 + 33 + 34,
    };
    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte that character `c` stands for, or `None` if `c` is not in the table.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    let byte = match code {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => code,
        0x100..=0x120 => code - 0x100,
        0x121..=0x142 => code - 0x121 + 0x7F,
        0x143 => 0xAD,
        _ => return None,
    };
    u8::try_from(byte).ok()
}

/// Appends the byte-level form of `text` (each UTF-8 byte as its table character) to `out`.
pub(crate) fn encode_into(text: &str, out: &mut String) {
    out.reserve(text.len());
    out.extend(text.bytes().map(byte_to_char));
}

/// Appends the bytes a vocabulary entry stands for, as HF's `ByteLevel` decoder does: when every
/// character of `token` is in the table, their bytes; otherwise (a special token such as
/// `<｜end▁of▁sentence｜>`) the token's own UTF-8 bytes, unchanged.
pub(crate) fn token_bytes_into(token: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_with_known_points() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn unmapped_tokens_decode_verbatim() {
        let mut out = Vec::new();
        token_bytes_into("ĠcafÃ©", &mut out);
        assert_eq!(out, " café".as_bytes());
        out.clear();
        token_bytes_into("<｜end｜>", &mut out);
        assert_eq!(out, "<｜end｜>".as_bytes());
    }
}
