//! The seven customer segments of design brief §4: the first rule that holds wins. Pure.

use serde::{Deserialize, Serialize};

/// A customer segment; its text form is the value of the `segment` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Segment {
    #[serde(rename = "VIP")]
    Vip,
    #[serde(rename = "High Value")]
    HighValue,
    #[serde(rename = "Medium Value")]
    MediumValue,
    #[serde(rename = "Converting Customer")]
    ConvertingCustomer,
    #[serde(rename = "Interested Shopper")]
    InterestedShopper,
    #[serde(rename = "Active Browser")]
    ActiveBrowser,
    #[serde(rename = "Casual Visitor")]
    CasualVisitor,
}

impl Segment {
    /// In rule order.
    pub const ALL: [Segment; 7] = [
        Segment::Vip,
        Segment::HighValue,
        Segment::MediumValue,
        Segment::ConvertingCustomer,
        Segment::InterestedShopper,
        Segment::ActiveBrowser,
        Segment::CasualVisitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Vip => "VIP",
            Segment::HighValue => "High Value",
            Segment::MediumValue => "Medium Value",
            Segment::ConvertingCustomer => "Converting Customer",
            Segment::InterestedShopper => "Interested Shopper",
            Segment::ActiveBrowser => "Active Browser",
            Segment::CasualVisitor => "Casual Visitor",
        }
    }

    pub fn parse(text: &str) -> Option<Segment> {
        Segment::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The segment of a customer; `revenue_cents` is the exact purchase revenue.
    pub fn classify(purchases: u64, revenue_cents: i64, carts: u64, views: u64) -> Segment {
        const UNIT: i64 = 100;
        if purchases >= 10 && revenue_cents >= 1000 * UNIT {
            Segment::Vip
        } else if purchases >= 5 && revenue_cents >= 250 * UNIT {
            Segment::HighValue
        } else if purchases >= 3 && revenue_cents >= 100 * UNIT {
            Segment::MediumValue
        } else if purchases >= 1 {
            Segment::ConvertingCustomer
        } else if carts >= 1 {
            Segment::InterestedShopper
        } else if views >= 10 {
            Segment::ActiveBrowser
        } else {
            Segment::CasualVisitor
        }
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Segment::*;
    use super::*;

    #[test]
    fn boundaries_of_every_rule() {
        // (purchases, revenue in cents, carts, views) -> segment
        let cases = [
            (10, 100_000, 0, 0, Vip),
            (10, 99_999, 0, 0, HighValue),
            (9, 1_000_000, 0, 0, HighValue),
            (5, 25_000, 0, 0, HighValue),
            (5, 24_999, 0, 0, MediumValue),
            (4, 900_000, 0, 0, MediumValue),
            (3, 10_000, 0, 0, MediumValue),
            (3, 9_999, 0, 0, ConvertingCustomer),
            (2, 1_000_000, 0, 0, ConvertingCustomer),
            (1, 0, 0, 0, ConvertingCustomer),
            (0, 0, 1, 50, InterestedShopper),
            (0, 0, 0, 10, ActiveBrowser),
            (0, 0, 0, 9, CasualVisitor),
            (0, 0, 0, 0, CasualVisitor),
        ];
        for (purchases, revenue, carts, views, expected) in cases {
            assert_eq!(
                Segment::classify(purchases, revenue, carts, views),
                expected,
                "purchases={purchases} revenue={revenue} carts={carts} views={views}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for segment in Segment::ALL {
            assert_eq!(Segment::parse(segment.as_str()), Some(segment));
            assert_eq!(
                serde_json::to_string(&segment).unwrap(),
                format!("\"{}\"", segment.as_str())
            );
        }
    }
}
