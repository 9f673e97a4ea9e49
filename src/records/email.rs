//! `EmailAddress`: an address that passed validation. The only way to build one is
//! [`EmailAddress::parse`], so an invalid address cannot reach the database from here.
//!
//! The rule accepts real addresses (dots and `+` in the local part, hyphens and subdomains in the
//! domain, long top-level domains) and everything the original service accepted
//! (`^\w+@[a-zA-Z_]+?\.[a-zA-Z]{2,3}$`, where `\w` is Unicode-aware), and rejects what is not an
//! address. Quoted local parts and IP-literal domains are not accepted: no client of the original
//! could send them.

/// At most 254 characters (characters, as the database's `char_length` check counts them).
///
/// RFC 5321's 64 for the local part and DNS's 63 for a label are not applied: the original
/// accepted `\w+@[a-zA-Z_]+?\.…` of any length, and every address it accepted stays accepted
/// (schemathesis found the 65-character local part the contract promised and the service
/// refused).
pub const MAX_LEN: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailAddress<'a>(&'a str);

/// The input is not an address this service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEmail;

impl<'a> EmailAddress<'a> {
    pub fn parse(s: &'a str) -> Result<EmailAddress<'a>, InvalidEmail> {
        if s.chars().count() > MAX_LEN {
            return Err(InvalidEmail);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(InvalidEmail)?;
        if !valid_local(local) || !valid_domain(domain) {
            return Err(InvalidEmail);
        }
        Ok(EmailAddress(s))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c) || is_unicode_word(c)
        })
}

/// Letters, digits and connector punctuation beyond ASCII: what Python's `\w` also matches.
fn is_unicode_word(c: char) -> bool {
    !c.is_ascii() && !c.is_whitespace() && !c.is_control() && (c.is_alphanumeric() || c == '‿')
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let tld = labels[labels.len() - 1];
    labels.iter().all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    }) && tld.chars().count() >= 2
        && tld.chars().next().is_some_and(char::is_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_addresses_and_everything_the_original_accepted() {
        let accepted = [
            ("a@b.com", "the original's shape"),
            (
                "user_1@my_host.org",
                "underscores, as the original's \\w and [a-zA-Z_]",
            ),
            ("élodie@example.fr", "Unicode letters, as Python's \\w"),
            (
                "first.last+tag@mail.example-host.co.uk",
                "dots, plus, hyphen, subdomains",
            ),
            ("x@example.museum", "long top-level domain"),
            ("o'brien@example.ie", "apostrophe is atext"),
            ("user@xn--bcher-kva.example", "punycode label"),
            ("ALICE@X.COM", "upper case"),
            ("a@b.co", "two-letter TLD"),
            ("1234@numbers.net", "digits"),
        ];
        for (addr, why) in accepted {
            assert!(
                EmailAddress::parse(addr).is_ok(),
                "{addr} must be accepted: {why}"
            );
        }
        let max = format!(
            "{}@{}.{}.{}.{}",
            "l".repeat(64),
            "d".repeat(61),
            "d".repeat(61),
            "d".repeat(61),
            "com"
        );
        assert_eq!(max.len(), 254);
        assert!(
            EmailAddress::parse(&max).is_ok(),
            "254 characters is allowed"
        );
        // The original's ^\w+@[a-zA-Z_]+?\.[a-zA-Z]{2,3}$ has no limit on either part.
        let long_local = format!("{}@example.com", "a".repeat(100));
        let long_label = format!("a@{}.com", "d".repeat(100));
        let unicode = format!("{}@example.fr", "é".repeat(200));
        for addr in [&long_local, &long_label, &unicode] {
            assert!(
                EmailAddress::parse(addr).is_ok(),
                "{addr}: the original accepted it"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        let too_long = format!(
            "{}@{}.{}.{}.{}",
            "l".repeat(64),
            "d".repeat(61),
            "d".repeat(61),
            "d".repeat(61),
            "comm"
        );
        let rejected = [
            ("plainaddress", "no @"),
            ("@example.com", "empty local part"),
            ("user@", "empty domain"),
            ("user@localhost", "domain without a dot"),
            ("us er@example.com", "space"),
            ("user@exa mple.com", "space in the domain"),
            ("user\n@example.com", "control character"),
            ("user@example.com\u{0}", "NUL"),
            (".user@example.com", "leading dot"),
            ("user.@example.com", "trailing dot"),
            ("us..er@example.com", "double dot"),
            ("user@-example.com", "label starts with a hyphen"),
            ("user@example..com", "empty label"),
            ("user@example.c", "one-letter TLD"),
            ("user@example.123", "numeric TLD"),
            ("a@b@c.com", "two @"),
            ("\"quoted\"@example.com", "quoted local part"),
            ("user@[127.0.0.1]", "IP literal"),
            (too_long.as_str(), "over 254 characters"),
            ("", "empty"),
        ];
        for (addr, why) in rejected {
            assert!(
                EmailAddress::parse(addr).is_err(),
                "{addr:?} must be rejected: {why}"
            );
        }
    }
}
