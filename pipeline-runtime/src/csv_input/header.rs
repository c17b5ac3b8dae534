//! The header: which column holds which field, matched by name. Pure, no I/O.

/// Column positions of the fields we read, found by header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub event_time: usize,
    pub event_type: usize,
    pub product_id: usize,
    pub price: usize,
    pub user_id: usize,
    pub category_id: Option<usize>,
    pub category_code: Option<usize>,
    pub brand: Option<usize>,
    pub user_session: Option<usize>,
    /// Number of fields every row must have.
    pub width: usize,
}

impl Columns {
    /// Matches header names (trimmed, case-insensitive; `timestamp` is an alias of
    /// `event_time` used when `event_time` itself is absent). Unknown names are ignored.
    pub fn from_header(names: &[&[u8]]) -> std::result::Result<Columns, String> {
        let normalized: Vec<String> = names
            .iter()
            .map(|n| String::from_utf8_lossy(n.trim_ascii()).to_ascii_lowercase())
            .collect();
        let find = |name: &str| -> std::result::Result<Option<usize>, String> {
            let mut hits = normalized.iter().enumerate().filter(|(_, n)| *n == name);
            let first = hits.next().map(|(i, _)| i);
            match hits.next() {
                Some(_) => Err(format!("column {name:?} appears more than once")),
                None => Ok(first),
            }
        };
        let event_time = match find("event_time")? {
            Some(i) => Some(i),
            None => find("timestamp")?,
        };
        let required = [
            ("event_time", event_time),
            ("event_type", find("event_type")?),
            ("product_id", find("product_id")?),
            ("price", find("price")?),
            ("user_id", find("user_id")?),
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, i)| i.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "required column(s) {} not found in header {:?}",
                missing.join(", "),
                normalized.join(",")
            ));
        }
        let at = |k: usize| required[k].1.unwrap_or_default();
        Ok(Columns {
            event_time: at(0),
            event_type: at(1),
            product_id: at(2),
            price: at(3),
            user_id: at(4),
            category_id: find("category_id")?,
            category_code: find("category_code")?,
            brand: find("brand")?,
            user_session: find("user_session")?,
            width: names.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::csv_input::open;
    use crate::csv_input::test_support::*;
    use crate::event::EventType;

    #[test]
    fn short_header_with_timestamp_alias() {
        let text = "user_id,event_type,product_id,price,timestamp\n7,purchase,9,1.5,2019-11-02T10:00:00Z\n";
        let (accepted, rejected) = parse(text.as_bytes());
        assert!(rejected.is_empty());
        let (line, event) = &accepted[0];
        assert_eq!(*line, 2);
        assert_eq!(event.user_id, 7);
        assert_eq!(event.product_id, 9);
        assert_eq!(event.price_cents, 150);
        assert_eq!(event.event_type, EventType::Purchase);
        assert_eq!(event.event_time, 1_572_688_800_000_000);
        assert_eq!(
            (
                &event.category_id,
                &event.category_code,
                &event.brand,
                &event.user_session
            ),
            (&None, &None, &None, &None)
        );
    }

    #[test]
    fn header_names_are_matched_by_name_and_extra_columns_ignored() {
        let text = "Note, USER_ID ,price,event_type,timestamp,product_id,brand\n\
                    \"any, thing\",5,2.00,cart,2019-10-05 12:00:00 UTC,77,acme\n\
                    x\u{FF},6,3.00,view,2019-10-05 12:00:01 UTC,78,\n";
        let (accepted, rejected) = parse(text.as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(accepted.len(), 2);
        assert_eq!(accepted[0].1.user_id, 5);
        assert_eq!(accepted[0].1.brand.as_deref(), Some("acme"));
        assert_eq!(accepted[1].1.brand, None);
        assert_eq!(accepted[1].1.product_id, 78);
    }

    #[test]
    fn header_errors_are_fatal_and_name_the_input() {
        let err = open("in.csv", &b""[..]).err().expect("empty input");
        assert_eq!(
            err.to_string(),
            "in.csv: line 1: bad header: the input is empty (no header line)"
        );
        let err = open("in.csv", &b"user_id,price\n1,2\n"[..])
            .err()
            .expect("missing");
        assert_eq!(
            err.to_string(),
            "in.csv: line 1: bad header: required column(s) event_time, event_type, product_id not found in header \"user_id,price\""
        );
        let err = open(
            "in.csv",
            &b"user_id,user_id,event_type,product_id,price,timestamp\n"[..],
        )
        .err()
        .expect("duplicate");
        assert!(err
            .to_string()
            .contains("column \"user_id\" appears more than once"));
    }
}
