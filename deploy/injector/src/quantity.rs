//! Kubernetes resource quantities (`250m`, `64Mi`, `1.5`, `2e3`): parsing and comparison.
//!
//! The injector validates resource overrides from pod annotations before it patches a pod,
//! so a typo is a denial that names the annotation rather than a pod the API server rejects
//! with a message about a field the user never wrote. Values are kept as exact integers of
//! nano-units (rounded up, as the API server rounds), which makes `1Gi == 1024Mi` and
//! `0.5 == 500m` exact.

use std::cmp::Ordering;
use std::fmt;

/// A parsed, non-negative quantity. Keeps the text it was parsed from for messages and output.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    nanos: u128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the Kubernetes quantity grammar.
    #[error("{0:?} is not a Kubernetes quantity (examples: 100m, 0.5, 64Mi, 1G)")]
    Syntax(String),
    /// The value is negative; resources cannot be.
    #[error("{0:?} is negative")]
    Negative(String),
    /// The value does not fit.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl Quantity {
    /// Parses a quantity. Only non-negative values are accepted.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_owned());
        let too_large = || QuantityError::TooLarge(text.to_owned());
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        // (power of ten, power of two) the suffix multiplies by.
        let (pow10, pow2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                (exp.parse::<i32>().map_err(|_| too_large())?, 0)
            }
            _ => return Err(syntax()),
        };
        let mut mantissa: u128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(b - b'0')))
                .ok_or_else(too_large)?;
        }
        if negative && mantissa != 0 {
            return Err(QuantityError::Negative(text.to_owned()));
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| too_large())?;
        let scale = pow10
            .checked_add(9)
            .and_then(|s| s.checked_sub(frac_len))
            .ok_or_else(too_large)?;
        let mut nanos = mantissa
            .checked_shl(pow2)
            .filter(|v| v >> pow2 == mantissa)
            .ok_or_else(too_large)?;
        if scale >= 0 {
            let factor = 10u128
                .checked_pow(scale.unsigned_abs())
                .ok_or_else(too_large)?;
            nanos = nanos.checked_mul(factor).ok_or_else(too_large)?;
        } else {
            // Below a nano-unit the API server rounds up; so do we.
            match 10u128.checked_pow(scale.unsigned_abs()) {
                Some(divisor) => nanos = nanos.div_ceil(divisor),
                None => nanos = u128::from(nanos != 0),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            nanos,
        })
    }

    /// The text the quantity was parsed from, as it goes into the pod spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
