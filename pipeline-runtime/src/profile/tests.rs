//! Profile arithmetic against hand-computed values and an independent naive model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::event::{Event, EventType};
use crate::money::MAX_PRICE_CENTS;
use crate::time::parse_event_time;

fn at(text: &str) -> i64 {
    parse_event_time(text.as_bytes()).expect("valid time")
}

#[allow(clippy::too_many_arguments)]
fn event(
    time: &str,
    kind: EventType,
    product: u64,
    category: Option<&str>,
    brand: Option<&str>,
    cents: i64,
    user: u64,
    session: Option<&str>,
) -> Event {
    Event {
        event_time: at(time),
        event_type: kind,
        product_id: product,
        category_id: Some(2_053_013_555_631_882_655),
        category_code: category.map(str::to_owned),
        brand: brand.map(str::to_owned),
        price_cents: cents,
        user_id: user,
        user_session: session.map(str::to_owned),
    }
}

fn hand_example() -> Vec<Event> {
    use EventType::*;
    let phone = Some("electronics.smartphone");
    let laptop = Some("computers.notebook");
    vec![
        event(
            "2019-10-01 10:00:00 UTC",
            View,
            100,
            phone,
            Some("apple"),
            50_000,
            1,
            Some("s1"),
        ),
        event(
            "2019-10-01 10:05:00 UTC",
            Cart,
            100,
            phone,
            Some("apple"),
            50_000,
            1,
            Some("s1"),
        ),
        event(
            "2019-10-01 10:06:00 UTC",
            Purchase,
            100,
            phone,
            Some("apple"),
            50_000,
            1,
            Some("s1"),
        ),
        event(
            "2019-10-03 09:00:00 UTC",
            View,
            200,
            laptop,
            Some("asus"),
            33_333,
            1,
            Some("s2"),
        ),
        event(
            "2019-10-03 09:10:00 UTC",
            Purchase,
            200,
            laptop,
            Some("asus"),
            33_333,
            1,
            Some("s2"),
        ),
        event(
            "2019-10-03 09:11:00 UTC",
            Purchase,
            300,
            None,
            Some("asus"),
            2,
            1,
            None,
        ),
        event(
            "2019-10-04 00:00:00 UTC",
            RemoveFromCart,
            100,
            phone,
            Some("apple"),
            50_000,
            1,
            Some("s2"),
        ),
    ]
}

#[test]
fn hand_computed_profile() {
    let mut book = ProfileBook::new();
    hand_example().iter().for_each(|e| book.apply(e).unwrap());
    let p = book.profile(1).expect("user 1");
    let expected = Profile {
        user_id: 1,
        total_events: 7,
        views: 2,
        carts: 1,
        removals: 1,
        purchases: 3,
        revenue_cents: 83_335,
        // 833.35 / 3 = 277.7833.. -> 277.78
        avg_order_value_cents: 27_778,
        max_purchase_price_cents: Some(50_000),
        distinct_sessions: 2,
        distinct_products: 3,
        active_days: 3,
        first_seen: at("2019-10-01 10:00:00 UTC"),
        last_seen: at("2019-10-04 00:00:00 UTC"),
        favorite_category: Some("electronics.smartphone".into()),
        favorite_brand: Some("apple".into()),
        conversion_rate: 3.0 / 7.0,
        cart_to_purchase_rate: 3.0,
        segment: Segment::MediumValue,
    };
    assert_eq!(p, expected);
    assert_eq!(book.len(), 1);
    assert_eq!(book.profile(2), None);
}

#[test]
fn user_without_purchases_carts_or_optional_fields() {
    let mut book = ProfileBook::new();
    book.apply(&event(
        "2019-10-01 23:59:59 UTC",
        EventType::View,
        5,
        None,
        None,
        999,
        9,
        None,
    ))
    .unwrap();
    book.apply(&event(
        "2019-10-02 00:00:00 UTC",
        EventType::View,
        5,
        None,
        None,
        999,
        9,
        None,
    ))
    .unwrap();
    let p = book.profile(9).unwrap();
    assert_eq!(p.revenue_cents, 0);
    assert_eq!(p.avg_order_value_cents, 0);
    assert_eq!(p.max_purchase_price_cents, None);
    assert_eq!(p.distinct_sessions, 0);
    assert_eq!(p.distinct_products, 1);
    assert_eq!(p.active_days, 2);
    assert_eq!(p.favorite_category, None);
    assert_eq!(p.favorite_brand, None);
    assert_eq!(p.conversion_rate, 0.0);
    assert_eq!(p.cart_to_purchase_rate, 0.0);
    assert_eq!(p.segment, Segment::CasualVisitor);
}

#[test]
fn average_order_value_rounds_half_away_from_zero() {
    let mut book = ProfileBook::new();
    // 0.01 + 0.02 = 0.03 over 2 purchases = 0.015 -> 0.02
    for cents in [1, 2] {
        book.apply(&event(
            "2019-10-01 00:00:00 UTC",
            EventType::Purchase,
            1,
            None,
            None,
            cents,
            3,
            None,
        ))
        .unwrap();
    }
    assert_eq!(book.profile(3).unwrap().avg_order_value_cents, 2);
}

#[test]
fn favorite_ties_are_lexicographically_smallest() {
    let mut book = ProfileBook::new();
    for (category, brand) in [
        ("b.x", "Zeta"),
        ("a.y", "alpha"),
        ("b.x", "alpha"),
        ("a.y", "Zeta"),
    ] {
        book.apply(&event(
            "2019-10-01 00:00:00 UTC",
            EventType::View,
            1,
            Some(category),
            Some(brand),
            100,
            4,
            Some("s"),
        ))
        .unwrap();
    }
    let p = book.profile(4).unwrap();
    assert_eq!(p.favorite_category.as_deref(), Some("a.y"));
    // Byte order: uppercase sorts before lowercase.
    assert_eq!(p.favorite_brand.as_deref(), Some("Zeta"));
}

/// Builds a user with the given counts and total revenue and returns its segment.
fn segment_of(purchases: u64, revenue_cents: i64, carts: u64, views: u64) -> Segment {
    let mut book = ProfileBook::new();
    let mut add = |kind, cents| {
        book.apply(&event(
            "2019-10-01 00:00:00 UTC",
            kind,
            1,
            None,
            None,
            cents,
            8,
            None,
        ))
        .unwrap();
    };
    for i in 0..purchases {
        // The first purchase carries the remainder so the total is exact.
        let share = revenue_cents / purchases as i64;
        let cents = if i == 0 {
            revenue_cents - share * (purchases as i64 - 1)
        } else {
            share
        };
        add(EventType::Purchase, cents);
    }
    (0..carts).for_each(|_| add(EventType::Cart, 0));
    (0..views).for_each(|_| add(EventType::View, 0));
    book.profile(8)
        .map(|p| p.segment)
        .unwrap_or(Segment::CasualVisitor)
}

#[test]
fn all_seven_segments_at_their_boundaries() {
    use Segment::*;
    assert_eq!(segment_of(10, 100_000, 0, 0), Vip);
    assert_eq!(segment_of(10, 99_999, 0, 0), HighValue);
    assert_eq!(segment_of(9, 500_000, 0, 0), HighValue);
    assert_eq!(segment_of(5, 25_000, 0, 0), HighValue);
    assert_eq!(segment_of(5, 24_999, 0, 0), MediumValue);
    assert_eq!(segment_of(3, 10_000, 0, 0), MediumValue);
    assert_eq!(segment_of(3, 9_999, 0, 0), ConvertingCustomer);
    assert_eq!(segment_of(1, 0, 0, 0), ConvertingCustomer);
    assert_eq!(segment_of(0, 0, 1, 100), InterestedShopper);
    assert_eq!(segment_of(0, 0, 0, 10), ActiveBrowser);
    assert_eq!(segment_of(0, 0, 0, 9), CasualVisitor);
}

#[test]
fn records_round_trip_and_merge() {
    let events = hand_example();
    let mut whole = ProfileBook::new();
    events.iter().for_each(|e| whole.apply(e).unwrap());

    let record = whole.record(1).unwrap();
    let json = serde_json::to_string(&record).unwrap();
    let back: StateRecord = serde_json::from_str(&json).unwrap();
    let mut restored = ProfileBook::new();
    restored.restore_record(&back).unwrap();
    assert_eq!(restored.profile(1), whole.profile(1));
    assert_eq!(restored.record(1), Some(record));

    let (left, right) = events.split_at(3);
    let mut a = ProfileBook::new();
    let mut b = ProfileBook::new();
    left.iter().for_each(|e| a.apply(e).unwrap());
    right.iter().for_each(|e| b.apply(e).unwrap());
    a.merge_record(&b.record(1).unwrap()).unwrap();
    assert_eq!(a.profile(1), whole.profile(1));
}

#[test]
fn copied_states_give_the_book_s_records_and_profiles_in_user_order() {
    // The hand example's users plus a heavy (spilled) one, applied in an order that
    // puts the higher ids first.
    let mut events = hand_example();
    events.reverse();
    for i in 0..300u64 {
        events.push(Event {
            user_id: 7,
            product_id: 1 + i,
            brand: Some(format!("brand{}", i % 13)),
            user_session: Some(format!("session-{}", i % 40)),
            ..events[0].clone()
        });
    }
    let mut book = ProfileBook::new();
    events.iter().for_each(|e| book.apply(e).unwrap());
    let ids = book.user_ids_sorted();
    assert!(ids.len() >= 2 && ids.contains(&7), "{ids:?}");

    let all = book.copy_all_states();
    assert_eq!(all.user_ids().collect::<Vec<_>>(), ids);
    let records: Vec<StateRecord> = ids.iter().map(|&id| book.record(id).unwrap()).collect();
    let profiles: Vec<Profile> = ids.iter().map(|&id| book.profile(id).unwrap()).collect();
    assert_eq!(all.records(), records);
    // Chunked as the checkpoint encoder reads them: the same rows, one per user.
    let chunked: Vec<Profile> = all.profile_chunks(1).flatten().collect();
    assert_eq!(chunked, profiles);
    assert_eq!(all.record_chunks(1).count(), ids.len());

    // Some users, in the order asked; unknown ids are left out.
    let some = book.copy_states(&[7, 999_999]);
    assert_eq!(some.user_ids().collect::<Vec<_>>(), vec![7]);
    assert_eq!(some.records(), vec![book.record(7).unwrap()]);
    // The copy does not follow later changes of the book.
    book.apply(&events[0]).unwrap();
    assert_ne!(
        book.record(events[0].user_id),
        all.records()
            .into_iter()
            .find(|r| r.user_id == events[0].user_id)
    );
}

#[test]
fn retain_keeps_only_chosen_users() {
    let mut book = ProfileBook::new();
    for user in 1..=5 {
        book.apply(&event(
            "2019-10-01 00:00:00 UTC",
            EventType::View,
            1,
            Some("c"),
            None,
            0,
            user,
            None,
        ))
        .unwrap();
    }
    book.retain(|id| id % 2 == 1);
    assert_eq!(book.user_ids_sorted(), vec![1, 3, 5]);
    assert_eq!(
        book.profile(3).unwrap().favorite_category.as_deref(),
        Some("c")
    );
    assert!(book.profile(2).is_none());
}

#[test]
fn sorted_profiles_come_in_chunks_in_user_order() {
    let mut book = ProfileBook::new();
    for user in [5, 3, 9, 1, 7] {
        book.apply(&event(
            "2019-10-01 00:00:00 UTC",
            EventType::View,
            1,
            None,
            None,
            0,
            user,
            None,
        ))
        .unwrap();
    }
    let expected = book.profiles();
    let sorted = book.into_sorted_profiles(2);
    assert_eq!(sorted.len(), 5);
    let chunks: Vec<Vec<Profile>> = sorted.collect();
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    assert_eq!(chunks.concat(), expected);
    assert_eq!(
        expected.iter().map(|p| p.user_id).collect::<Vec<_>>(),
        vec![1, 3, 5, 7, 9]
    );
}

#[test]
fn state_is_compact() {
    assert_eq!(std::mem::size_of::<ProfileState>(), 128);
}

/// The §4 definition computed the obvious way, sharing no code with ProfileState.
fn naive_profiles(events: &[Event]) -> Vec<Profile> {
    let mut by_user: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_user.entry(e.user_id).or_default().push(e);
    }
    by_user
        .into_iter()
        .map(|(user_id, evs)| {
            let count = |k| evs.iter().filter(|e| e.event_type == k).count() as u64;
            let purchases: Vec<i64> = evs
                .iter()
                .filter(|e| e.event_type == EventType::Purchase)
                .map(|e| e.price_cents)
                .collect();
            let revenue: i64 = purchases.iter().sum();
            let favorite = |pick: fn(&Event) -> Option<&String>| {
                let mut counts: BTreeMap<&String, u64> = BTreeMap::new();
                evs.iter()
                    .filter_map(|e| pick(e))
                    .for_each(|v| *counts.entry(v).or_default() += 1);
                let max = counts.values().copied().max();
                counts
                    .into_iter()
                    .find(|(_, c)| Some(*c) == max)
                    .map(|(v, _)| v.clone())
            };
            let (total, views, carts, n_purchases) = (
                evs.len() as u64,
                count(EventType::View),
                count(EventType::Cart),
                purchases.len() as u64,
            );
            let aov = if n_purchases == 0 {
                0
            } else {
                // Half away from zero via f64 is exact enough for these small test values.
                ((revenue as f64) / (n_purchases as f64)).round() as i64
            };
            Profile {
                user_id,
                total_events: total,
                views,
                carts,
                removals: count(EventType::RemoveFromCart),
                purchases: n_purchases,
                revenue_cents: revenue,
                avg_order_value_cents: aov,
                max_purchase_price_cents: purchases.iter().copied().max(),
                distinct_sessions: evs
                    .iter()
                    .filter_map(|e| e.user_session.as_ref())
                    .collect::<BTreeSet<_>>()
                    .len() as u64,
                distinct_products: evs
                    .iter()
                    .map(|e| e.product_id)
                    .collect::<BTreeSet<_>>()
                    .len() as u64,
                active_days: evs
                    .iter()
                    .map(|e| e.event_time.div_euclid(86_400_000_000))
                    .collect::<BTreeSet<_>>()
                    .len() as u64,
                first_seen: evs.iter().map(|e| e.event_time).min().unwrap_or_default(),
                last_seen: evs.iter().map(|e| e.event_time).max().unwrap_or_default(),
                favorite_category: favorite(|e| e.category_code.as_ref()),
                favorite_brand: favorite(|e| e.brand.as_ref()),
                conversion_rate: n_purchases as f64 / total as f64,
                cart_to_purchase_rate: if carts == 0 {
                    0.0
                } else {
                    n_purchases as f64 / carts as f64
                },
                segment: if n_purchases >= 10 && revenue >= 100_000 {
                    Segment::Vip
                } else if n_purchases >= 5 && revenue >= 25_000 {
                    Segment::HighValue
                } else if n_purchases >= 3 && revenue >= 10_000 {
                    Segment::MediumValue
                } else if n_purchases >= 1 {
                    Segment::ConvertingCustomer
                } else if carts >= 1 {
                    Segment::InterestedShopper
                } else if views >= 10 {
                    Segment::ActiveBrowser
                } else {
                    Segment::CasualVisitor
                },
            }
        })
        .collect()
}

fn arb_event() -> impl Strategy<Value = Event> {
    let kinds = prop::sample::select(EventType::ALL.to_vec());
    let text = |pool: &'static [&'static str]| {
        prop::option::weighted(0.7, prop::sample::select(pool).prop_map(str::to_owned))
    };
    (
        0i64..(5 * 86_400),
        kinds,
        1u64..20,
        text(&["a", "b", "c", "electronics.smartphone"]),
        text(&["apple", "Apple", "asus"]),
        0i64..60_000,
        1u64..6,
        text(&["s1", "s2", "s3", "s4"]),
    )
        .prop_map(
            |(secs, kind, product, category, brand, cents, user, session)| Event {
                event_time: 1_569_888_000_000_000 + secs * 1_000_000,
                event_type: kind,
                product_id: product,
                category_id: None,
                category_code: category,
                brand,
                price_cents: cents,
                user_id: user,
                user_session: session,
            },
        )
}

proptest! {
    #[test]
    fn profiles_match_the_naive_definition_in_any_order(
        (events, shuffled) in prop::collection::vec(arb_event(), 1..120)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let mut book = ProfileBook::new();
        events.iter().for_each(|e| book.apply(e).unwrap());
        let mut other = ProfileBook::new();
        shuffled.iter().for_each(|e| other.apply(e).unwrap());
        let profiles = book.profiles();
        prop_assert_eq!(&profiles, &naive_profiles(&events));
        prop_assert_eq!(&profiles, &other.profiles());
        for id in book.user_ids_sorted() {
            prop_assert_eq!(book.record(id), other.record(id));
        }
    }

    #[test]
    fn state_columns_hold_the_records_values_and_encode_to_the_same_bytes(
        events in prop::collection::vec(arb_event(), 1..150),
        rows in 1usize..5,
    ) {
        let mut book = ProfileBook::new();
        events.iter().for_each(|e| book.apply(e).unwrap());
        let all = book.copy_all_states();
        let records = all.records();
        let from_states: Vec<StateColumns> = all.state_columns(rows).collect();
        let from_records: Vec<StateColumns> = records
            .chunks(rows)
            .map(|chunk| {
                let mut columns = StateColumns::default();
                chunk.iter().for_each(|r| columns.push_record(r));
                columns
            })
            .collect();
        prop_assert_eq!(&from_states, &from_records);
        prop_assert_eq!(
            crate::parquet::encode_state_columns(all.state_columns(rows)).unwrap(),
            crate::parquet::encode_state_columns(from_records.into_iter()).unwrap()
        );
        prop_assert_eq!(
            crate::parquet::decode_states(
                crate::parquet::encode_state_columns(all.state_columns(rows)).unwrap()
            ).unwrap(),
            records
        );
    }

    #[test]
    fn merging_partial_states_equals_applying_everything(
        events in prop::collection::vec(arb_event(), 1..80),
        cut in 0usize..80,
    ) {
        let cut = cut.min(events.len());
        let mut whole = ProfileBook::new();
        events.iter().for_each(|e| whole.apply(e).unwrap());
        let mut first = ProfileBook::new();
        events[..cut].iter().for_each(|e| first.apply(e).unwrap());
        let mut second = ProfileBook::new();
        events[cut..].iter().for_each(|e| second.apply(e).unwrap());
        for id in second.user_ids_sorted() {
            first.merge_record(&second.record(id).unwrap()).unwrap();
        }
        prop_assert_eq!(first.profiles(), whole.profiles());
    }
}

#[test]
fn a_heavy_user_spills_and_still_matches_the_naive_definition() {
    // Many distinct products, sessions, days, categories and brands, inserted in an order
    // that exercises inserts at the front, middle and end of each spilled segment.
    let mut events = Vec::new();
    for i in 0..3000u64 {
        let k = (i * 7919) % 3000;
        events.push(Event {
            event_time: 1_569_888_000_000_000 + (k % 61) as i64 * 86_400_000_000,
            event_type: EventType::ALL[(k % 4) as usize],
            product_id: 1 + k % 1500,
            category_id: None,
            category_code: Some(format!("cat{}", k % 37)),
            brand: Some(format!("brand{}", k % 101)),
            price_cents: (k % 997) as i64,
            user_id: 42,
            user_session: Some(format!("session-{}", k % 400)),
        });
    }
    let mut book = ProfileBook::new();
    events.iter().for_each(|e| book.apply(e).unwrap());
    assert_eq!(book.profiles(), naive_profiles(&events));
    let p = book.profile(42).unwrap();
    assert_eq!(
        (p.distinct_products, p.distinct_sessions, p.active_days),
        (1500, 400, 61)
    );
    let mut restored = ProfileBook::new();
    restored.restore_record(&book.record(42).unwrap()).unwrap();
    assert_eq!(restored.profile(42), Some(p));
}

/// A state record of `user` with the given counts and revenue, one product and one day.
fn record_of(user: u64, views: u32, purchases: u32, revenue_cents: i64) -> StateRecord {
    StateRecord {
        user_id: user,
        views,
        carts: 0,
        removals: 0,
        purchases,
        revenue_cents,
        max_purchase_cents: (purchases > 0).then_some(revenue_cents.min(MAX_PRICE_CENTS)),
        first_seen: at("2019-10-01 00:00:00 UTC"),
        last_seen: at("2019-10-01 00:00:00 UTC"),
        session_keys: vec![],
        products: vec![1],
        days: vec![18_170],
        categories: vec![],
        brands: vec![],
    }
}

#[test]
fn revenue_past_i64_max_is_an_error_naming_the_user_and_changes_nothing() {
    let mut book = ProfileBook::new();
    let purchase = |time: &str| {
        event(
            time,
            EventType::Purchase,
            7,
            Some("a"),
            Some("b"),
            MAX_PRICE_CENTS,
            77,
            Some("s"),
        )
    };
    // Nine purchases at the largest price fit: 8,999,999,999,999,999,991 cents.
    for _ in 0..9 {
        book.apply(&purchase("2019-10-01 10:00:00 UTC")).unwrap();
    }
    let before = book.record(77).unwrap();
    let err = book
        .apply(&purchase("2019-10-02 10:00:00 UTC"))
        .unwrap_err();
    assert_eq!(
        err,
        ProfileError::Overflow {
            user_id: 77,
            quantity: Quantity::Revenue
        }
    );
    assert_eq!(
        err.to_string(),
        "profile of user_id 77: revenue would exceed 92233720368547758.07 (the largest sum of cents a 64-bit integer holds)"
    );
    // The refused event left no trace: not its count, day, category or brand.
    assert_eq!(book.record(77).unwrap(), before);
    let p = book.profile(77).unwrap();
    assert_eq!(
        (p.purchases, p.revenue_cents, p.avg_order_value_cents),
        (9, 8_999_999_999_999_999_991, 999_999_999_999_999_999)
    );
    assert_eq!(p.active_days, 1);
    // The crate error says the same (what `run` reports).
    let err: crate::Error = err.into();
    assert_eq!(
        err.to_string(),
        "profile of user_id 77: revenue would exceed 92233720368547758.07 (the largest sum of cents a 64-bit integer holds)"
    );
}

#[test]
fn a_count_past_u32_max_is_an_error_naming_the_user() {
    let mut book = ProfileBook::new();
    book.restore_record(&record_of(5, u32::MAX, 0, 0)).unwrap();
    let view = event(
        "2019-10-01 00:00:00 UTC",
        EventType::View,
        1,
        None,
        None,
        100,
        5,
        None,
    );
    let err = book.apply(&view).unwrap_err();
    assert_eq!(
        err.to_string(),
        "profile of user_id 5: views would exceed 4294967295 events (the largest count a profile state holds)"
    );
    assert_eq!(book.profile(5).unwrap().views, 4_294_967_295);
    // Another type still counts.
    let cart = Event {
        event_type: EventType::Cart,
        ..view
    };
    book.apply(&cart).unwrap();
    assert_eq!(book.profile(5).unwrap().total_events, 4_294_967_296);
}

#[test]
fn a_category_or_brand_count_past_u32_max_is_an_error() {
    let mut record = record_of(6, 0, 0, 0);
    record.categories = vec![("a".into(), u32::MAX)];
    record.brands = vec![("b".into(), u32::MAX)];
    let mut book = ProfileBook::new();
    book.restore_record(&record).unwrap();
    let view = |category: Option<&str>, brand: Option<&str>| {
        event(
            "2019-10-01 00:00:00 UTC",
            EventType::View,
            1,
            category,
            brand,
            100,
            6,
            None,
        )
    };
    let err = book.apply(&view(Some("a"), None)).unwrap_err();
    assert_eq!(
        err,
        ProfileError::Overflow {
            user_id: 6,
            quantity: Quantity::CategoryEvents
        }
    );
    assert_eq!(
        err.to_string(),
        "profile of user_id 6: the events of one category_code would exceed 4294967295 events (the largest count a profile state holds)"
    );
    let err = book.apply(&view(Some("c"), Some("b"))).unwrap_err();
    assert_eq!(
        err,
        ProfileError::Overflow {
            user_id: 6,
            quantity: Quantity::BrandEvents
        }
    );
    // Neither refused event was counted, not even its category "c".
    assert_eq!(book.record(6).unwrap(), record);
    book.apply(&view(Some("c"), Some("d"))).unwrap();
    assert_eq!(book.profile(6).unwrap().views, 1);
}

#[test]
fn merging_states_past_the_limits_is_an_error_and_changes_nothing() {
    let mut book = ProfileBook::new();
    book.restore_record(&record_of(8, 1, 1, i64::MAX - 5))
        .unwrap();
    let err = book.merge_record(&record_of(8, 1, 1, 6)).unwrap_err();
    assert_eq!(
        err,
        ProfileError::Overflow {
            user_id: 8,
            quantity: Quantity::Revenue
        }
    );
    assert_eq!(book.record(8).unwrap(), record_of(8, 1, 1, i64::MAX - 5));
    book.merge_record(&record_of(8, 1, 1, 5)).unwrap();
    assert_eq!(book.profile(8).unwrap().revenue_cents, i64::MAX);
    assert_eq!(
        book.profile(8).unwrap().avg_order_value_cents,
        i64::MAX / 2 + 1
    );

    let err = book
        .merge_record(&record_of(8, u32::MAX, 0, 0))
        .unwrap_err();
    assert_eq!(
        err,
        ProfileError::Overflow {
            user_id: 8,
            quantity: Quantity::Events(EventType::View)
        }
    );
    let mut twice = record_of(9, 0, 0, 0);
    twice.brands = vec![("b".into(), u32::MAX), ("b".into(), 1)];
    assert_eq!(
        ProfileBook::new().restore_record(&twice).unwrap_err(),
        ProfileError::Overflow {
            user_id: 9,
            quantity: Quantity::BrandEvents
        }
    );
}

#[test]
fn average_order_value_of_the_largest_revenue_fits() {
    let mut book = ProfileBook::new();
    book.restore_record(&record_of(3, 0, 1, i64::MAX)).unwrap();
    let p = book.profile(3).unwrap();
    assert_eq!(
        (p.revenue_cents, p.avg_order_value_cents),
        (i64::MAX, i64::MAX)
    );
}
