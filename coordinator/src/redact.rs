//! Credentials out of what is stored and shown: a URL written `scheme://user:secret@host/`
//! in a step (or reported back by an HTTP client's error) keeps its host and path, and its
//! user information becomes `***`.
//!
//! Step errors are redacted before they are stored ([`crate::runner`]), and the API's views
//! redact again what logs written before this rule may hold.

use std::borrow::Cow;

/// `text` with the user information of every URL in it replaced by `***`.
pub fn url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        // The authority runs to the first character that ends it in a URL or in prose.
        let end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | ')') || c.is_whitespace())
            .unwrap_or(rest.len());
        match rest[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&rest[userinfo_end..end]);
            }
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_replaced_and_the_rest_kept() {
        let cases = [
            (
                "HTTP 500 from http://bob:s3cret@pay.example/charge?x=1: boom",
                "HTTP 500 from http://***@pay.example/charge?x=1: boom",
            ),
            (
                "error sending request for url (https://token@api.example:8443/a)",
                "error sending request for url (https://***@api.example:8443/a)",
            ),
            (
                "`postgres://u:p@db/x` and http://ok.example/y@z",
                "`postgres://***@db/x` and http://ok.example/y@z",
            ),
            ("no url here, mail me@example.com", "no url here, mail me@example.com"),
            ("http://a:b@h http://c@i", "http://***@h http://***@i"),
            ("trailing http://", "trailing http://"),
        ];
        for (text, expected) in cases {
            assert_eq!(url_credentials(text), expected, "{text}");
        }
    }
}
