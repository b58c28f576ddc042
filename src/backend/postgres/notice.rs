//! Notices as progress: `RAISE NOTICE 'progress: 40 loading rows'`.
//!
//! A notice whose text starts with `progress` (any case), an optional `:`,
//! a whole number 0–100 and an optional `%` moves the job's progress, and the
//! rest of the text (after optional `-`) becomes its progress message. Every
//! other notice is kept as a message of the call.

use crate::backend::Progress;

/// Routes one notice to the sink.
pub fn deliver(text: &str, progress: &dyn Progress) {
    match parse_progress(text) {
        Some((percent, message)) => progress.report(percent, message),
        None => progress.message(text.to_string()),
    }
}

/// `Some((percent, message))` when the text is a progress report.
pub fn parse_progress(text: &str) -> Option<(u32, Option<String>)> {
    let text = text.trim();
    let keyword = text.get(..8)?;
    if !keyword.eq_ignore_ascii_case("progress") {
        return None;
    }
    let rest = text[8..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let percent: u32 = rest[..digits].parse().ok()?;
    if percent > 100 {
        return None;
    }
    let rest = &rest[digits..];
    let rest = rest.strip_prefix('%').unwrap_or(rest);
    if rest.starts_with(|c: char| !c.is_whitespace() && !matches!(c, '-' | ':' | ',')) {
        return None; // "progress: 40abc" is not a report
    }
    let message = rest.trim_start().trim_start_matches(['-', ':', ',']).trim();
    Some((percent, (!message.is_empty()).then(|| message.to_string())))
}

#[cfg(test)]
mod tests {
    use super::parse_progress;

    #[test]
    fn reads_progress_reports() {
        let some = |p, m: &str| Some((p, Some(m.to_string())));
        assert_eq!(
            parse_progress("progress: 40 loading rows"),
            some(40, "loading rows")
        );
        assert_eq!(
            parse_progress("PROGRESS 75% - merging"),
            some(75, "merging")
        );
        assert_eq!(parse_progress("Progress:100%"), Some((100, None)));
        assert_eq!(parse_progress("progress: 0"), Some((0, None)));
    }

    #[test]
    fn other_text_is_a_message() {
        for text in [
            "progressing nicely",
            "progress: 101 too far",
            "progress: -5",
            "progress: 40abc",
            "loaded 40 rows",
            "progress:",
            "prog",
        ] {
            assert_eq!(parse_progress(text), None, "{text}");
        }
    }
}
