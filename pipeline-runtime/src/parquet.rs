//! Arrow and Parquet encoding of events, profiles and profile states: pure functions
//! between typed rows, Arrow batches and Parquet bytes; the only I/O is
//! [`read_parquet_file`] for local files.
//!
//! Types: ids and counts `UInt64`; times `Timestamp(Microsecond, "UTC")`; money
//! `Decimal128` with scale 2 built from exact cents (`price`, `avg_order_value`,
//! `max_purchase_price`: precision 18; `revenue`: precision 20, since a sum may exceed 18
//! digits); rates `Float64`; text `Utf8`. Compression zstd level 1.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::event::{Event, EventType};
use crate::profile::{FlatList, Profile, Segment, StateColumns, StateRecord};
use crate::time;

/// Rows per Parquet row group (and the embedded run's rows per events file).
pub const ROWS_PER_FILE: usize = 128 * 1024;

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of the events lake: the §3 columns.
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_time", utc_micros(), false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("product_id", DataType::UInt64, false),
        Field::new("category_id", DataType::UInt64, true),
        Field::new("category_code", DataType::Utf8, true),
        Field::new("brand", DataType::Utf8, true),
        Field::new("price", DataType::Decimal128(18, 2), false),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("user_session", DataType::Utf8, true),
    ]))
}

/// Schema of profile rows: exactly the §4 names, in that order.
pub fn profiles_schema() -> SchemaRef {
    let count = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        count("user_id"),
        count("total_events"),
        count("views"),
        count("carts"),
        count("removals"),
        count("purchases"),
        Field::new("revenue", DataType::Decimal128(20, 2), false),
        Field::new("avg_order_value", DataType::Decimal128(18, 2), false),
        Field::new("max_purchase_price", DataType::Decimal128(18, 2), true),
        count("distinct_sessions"),
        count("distinct_products"),
        count("active_days"),
        Field::new("first_seen", utc_micros(), false),
        Field::new("last_seen", utc_micros(), false),
        Field::new("favorite_category", DataType::Utf8, true),
        Field::new("favorite_brand", DataType::Utf8, true),
        Field::new("conversion_rate", DataType::Float64, false),
        Field::new("cart_to_purchase_rate", DataType::Float64, false),
        Field::new("segment", DataType::Utf8, false),
    ]))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

/// Schema of persisted profile states ([`StateRecord`]), for the process role's snapshots.
pub fn states_schema() -> SchemaRef {
    let u32_col = |name: &str| Field::new(name, DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        u32_col("views"),
        u32_col("carts"),
        u32_col("removals"),
        u32_col("purchases"),
        Field::new("revenue_cents", DataType::Int64, false),
        Field::new("max_purchase_cents", DataType::Int64, true),
        Field::new("first_seen", DataType::Int64, false),
        Field::new("last_seen", DataType::Int64, false),
        Field::new("session_keys", list_of(DataType::UInt64), false),
        Field::new("products", list_of(DataType::UInt64), false),
        Field::new("days", list_of(DataType::Int32), false),
        Field::new("category_names", list_of(DataType::Utf8), false),
        Field::new("category_counts", list_of(DataType::UInt32), false),
        Field::new("brand_names", list_of(DataType::Utf8), false),
        Field::new("brand_counts", list_of(DataType::UInt32), false),
    ]))
}

fn decimal(values: Vec<i128>, precision: u8) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from(values).with_precision_and_scale(precision, 2)?,
    ))
}

fn opt_decimal(values: Vec<Option<i128>>, precision: u8) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from(values).with_precision_and_scale(precision, 2)?,
    ))
}

fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

/// Events -> an Arrow batch with [`events_schema`].
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        timestamps(events.iter().map(|e| e.event_time).collect()),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.event_type.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.product_id),
        )),
        Arc::new(UInt64Array::from_iter(events.iter().map(|e| e.category_id))),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.category_code.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.brand.as_deref()),
        )),
        decimal(
            events.iter().map(|e| i128::from(e.price_cents)).collect(),
            18,
        )?,
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.user_id),
        )),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.user_session.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(events_schema(), columns)?)
}

/// Profiles -> an Arrow batch with [`profiles_schema`].
pub fn profiles_to_batch(profiles: &[Profile]) -> Result<RecordBatch> {
    let u64s = |f: fn(&Profile) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(profiles.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        u64s(|p| p.user_id),
        u64s(|p| p.total_events),
        u64s(|p| p.views),
        u64s(|p| p.carts),
        u64s(|p| p.removals),
        u64s(|p| p.purchases),
        decimal(
            profiles
                .iter()
                .map(|p| i128::from(p.revenue_cents))
                .collect(),
            20,
        )?,
        decimal(
            profiles
                .iter()
                .map(|p| i128::from(p.avg_order_value_cents))
                .collect(),
            18,
        )?,
        opt_decimal(
            profiles
                .iter()
                .map(|p| p.max_purchase_price_cents.map(i128::from))
                .collect(),
            18,
        )?,
        u64s(|p| p.distinct_sessions),
        u64s(|p| p.distinct_products),
        u64s(|p| p.active_days),
        timestamps(profiles.iter().map(|p| p.first_seen).collect()),
        timestamps(profiles.iter().map(|p| p.last_seen).collect()),
        Arc::new(StringArray::from_iter(
            profiles.iter().map(|p| p.favorite_category.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            profiles.iter().map(|p| p.favorite_brand.as_deref()),
        )),
        Arc::new(Float64Array::from_iter_values(
            profiles.iter().map(|p| p.conversion_rate),
        )),
        Arc::new(Float64Array::from_iter_values(
            profiles.iter().map(|p| p.cart_to_purchase_rate),
        )),
        Arc::new(StringArray::from_iter_values(
            profiles.iter().map(|p| p.segment.as_str()),
        )),
    ];
    Ok(RecordBatch::try_new(profiles_schema(), columns)?)
}

/// Profile states -> an Arrow batch with [`states_schema`].
pub fn states_to_batch(records: &[StateRecord]) -> Result<RecordBatch> {
    let mut columns = StateColumns::default();
    for record in records {
        columns.push_record(record);
    }
    state_columns_to_batch(columns)
}

/// A list column from its flat values (moved, not copied) and row lengths.
fn flat_list<T>(
    list: FlatList<T>,
    values: impl FnOnce(Vec<T>) -> ArrayRef,
    item: DataType,
) -> Result<ArrayRef> {
    let field = Arc::new(Field::new("item", item, false));
    Ok(Arc::new(ListArray::try_new(
        field,
        OffsetBuffer::from_lengths(list.lengths),
        values(list.values),
        None,
    )?))
}

/// State columns -> an Arrow batch with [`states_schema`].
pub fn state_columns_to_batch(c: StateColumns<'_>) -> Result<RecordBatch> {
    let u64s = |v: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(v)) };
    let u32s = |v: Vec<u32>| -> ArrayRef { Arc::new(UInt32Array::from(v)) };
    let strings = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let columns: Vec<ArrayRef> = vec![
        u64s(c.user_ids),
        u32s(c.views),
        u32s(c.carts),
        u32s(c.removals),
        u32s(c.purchases),
        Arc::new(Int64Array::from(c.revenue_cents)),
        Arc::new(Int64Array::from(c.max_purchase_cents)),
        Arc::new(Int64Array::from(c.first_seen)),
        Arc::new(Int64Array::from(c.last_seen)),
        flat_list(c.session_keys, u64s, DataType::UInt64)?,
        flat_list(c.products, u64s, DataType::UInt64)?,
        flat_list(c.days, |v| Arc::new(Int32Array::from(v)), DataType::Int32)?,
        flat_list(c.category_names, strings, DataType::Utf8)?,
        flat_list(c.category_counts, u32s, DataType::UInt32)?,
        flat_list(c.brand_names, strings, DataType::Utf8)?,
        flat_list(c.brand_counts, u32s, DataType::UInt32)?,
    ];
    Ok(RecordBatch::try_new(states_schema(), columns)?)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Schema(format!("column {name:?} missing or of another type")))
}

fn opt_str(array: &StringArray, row: usize) -> Option<String> {
    array.is_valid(row).then(|| array.value(row).to_owned())
}

fn opt_value<T: arrow::datatypes::ArrowPrimitiveType>(
    array: &arrow::array::PrimitiveArray<T>,
    row: usize,
) -> Option<T::Native> {
    array.is_valid(row).then(|| array.value(row))
}

fn cents(value: i128, column: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::Schema(format!("{column} out of range")))
}

/// An Arrow batch with [`events_schema`] -> events.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<Event>> {
    let time = column::<TimestampMicrosecondArray>(batch, "event_time")?;
    let kind = column::<StringArray>(batch, "event_type")?;
    let product = column::<UInt64Array>(batch, "product_id")?;
    let category_id = column::<UInt64Array>(batch, "category_id")?;
    let category_code = column::<StringArray>(batch, "category_code")?;
    let brand = column::<StringArray>(batch, "brand")?;
    let price = column::<Decimal128Array>(batch, "price")?;
    let user = column::<UInt64Array>(batch, "user_id")?;
    let session = column::<StringArray>(batch, "user_session")?;
    (0..batch.num_rows())
        .map(|row| {
            Ok(Event {
                event_time: time.value(row),
                event_type: EventType::parse(kind.value(row).as_bytes()).ok_or_else(|| {
                    Error::Schema(format!("unknown event_type {:?}", kind.value(row)))
                })?,
                product_id: product.value(row),
                category_id: opt_value(category_id, row),
                category_code: opt_str(category_code, row),
                brand: opt_str(brand, row),
                price_cents: cents(price.value(row), "price")?,
                user_id: user.value(row),
                user_session: opt_str(session, row),
            })
        })
        .collect()
}

/// An Arrow batch with [`profiles_schema`] -> profiles.
pub fn batch_to_profiles(batch: &RecordBatch) -> Result<Vec<Profile>> {
    let u = |name: &str| column::<UInt64Array>(batch, name);
    let (user, total, views, carts, removals, purchases) = (
        u("user_id")?,
        u("total_events")?,
        u("views")?,
        u("carts")?,
        u("removals")?,
        u("purchases")?,
    );
    let (sessions, products, days) = (
        u("distinct_sessions")?,
        u("distinct_products")?,
        u("active_days")?,
    );
    let revenue = column::<Decimal128Array>(batch, "revenue")?;
    let aov = column::<Decimal128Array>(batch, "avg_order_value")?;
    let max_price = column::<Decimal128Array>(batch, "max_purchase_price")?;
    let first = column::<TimestampMicrosecondArray>(batch, "first_seen")?;
    let last = column::<TimestampMicrosecondArray>(batch, "last_seen")?;
    let category = column::<StringArray>(batch, "favorite_category")?;
    let brand = column::<StringArray>(batch, "favorite_brand")?;
    let conversion = column::<Float64Array>(batch, "conversion_rate")?;
    let cart_rate = column::<Float64Array>(batch, "cart_to_purchase_rate")?;
    let segment = column::<StringArray>(batch, "segment")?;
    (0..batch.num_rows())
        .map(|row| {
            Ok(Profile {
                user_id: user.value(row),
                total_events: total.value(row),
                views: views.value(row),
                carts: carts.value(row),
                removals: removals.value(row),
                purchases: purchases.value(row),
                revenue_cents: cents(revenue.value(row), "revenue")?,
                avg_order_value_cents: cents(aov.value(row), "avg_order_value")?,
                max_purchase_price_cents: opt_value(max_price, row)
                    .map(|v| cents(v, "max_purchase_price"))
                    .transpose()?,
                distinct_sessions: sessions.value(row),
                distinct_products: products.value(row),
                active_days: days.value(row),
                first_seen: first.value(row),
                last_seen: last.value(row),
                favorite_category: opt_str(category, row),
                favorite_brand: opt_str(brand, row),
                conversion_rate: conversion.value(row),
                cart_to_purchase_rate: cart_rate.value(row),
                segment: Segment::parse(segment.value(row)).ok_or_else(|| {
                    Error::Schema(format!("unknown segment {:?}", segment.value(row)))
                })?,
            })
        })
        .collect()
}

fn typed_list<T: 'static + Clone, A: Array + 'static>(
    list: &ListArray,
    row: usize,
    get: impl Fn(&A, usize) -> T,
) -> Result<Vec<T>> {
    let values = list.value(row);
    let array = values
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| Error::Schema("list of an unexpected type".into()))?;
    Ok((0..array.len()).map(|i| get(array, i)).collect())
}

/// An Arrow batch with [`states_schema`] -> state records.
pub fn batch_to_states(batch: &RecordBatch) -> Result<Vec<StateRecord>> {
    let user = column::<UInt64Array>(batch, "user_id")?;
    let u = |name: &str| column::<UInt32Array>(batch, name);
    let (views, carts, removals, purchases) =
        (u("views")?, u("carts")?, u("removals")?, u("purchases")?);
    let i = |name: &str| column::<Int64Array>(batch, name);
    let (revenue, max_price, first, last) = (
        i("revenue_cents")?,
        i("max_purchase_cents")?,
        i("first_seen")?,
        i("last_seen")?,
    );
    let l = |name: &str| column::<ListArray>(batch, name);
    let (sessions, products, days) = (l("session_keys")?, l("products")?, l("days")?);
    let (cat_names, cat_counts) = (l("category_names")?, l("category_counts")?);
    let (brand_names, brand_counts) = (l("brand_names")?, l("brand_counts")?);
    let pairs = |names: &ListArray, counts: &ListArray, row: usize| -> Result<Vec<(String, u32)>> {
        let names = typed_list(names, row, |a: &StringArray, i| a.value(i).to_owned())?;
        let counts = typed_list(counts, row, |a: &UInt32Array, i| a.value(i))?;
        if names.len() != counts.len() {
            return Err(Error::Schema(
                "name and count lists differ in length".into(),
            ));
        }
        Ok(names.into_iter().zip(counts).collect())
    };
    (0..batch.num_rows())
        .map(|row| {
            Ok(StateRecord {
                user_id: user.value(row),
                views: views.value(row),
                carts: carts.value(row),
                removals: removals.value(row),
                purchases: purchases.value(row),
                revenue_cents: revenue.value(row),
                max_purchase_cents: opt_value(max_price, row),
                first_seen: first.value(row),
                last_seen: last.value(row),
                session_keys: typed_list(sessions, row, |a: &UInt64Array, i| a.value(i))?,
                products: typed_list(products, row, |a: &UInt64Array, i| a.value(i))?,
                days: typed_list(days, row, |a: &Int32Array, i| a.value(i))?,
                categories: pairs(cat_names, cat_counts, row)?,
                brands: pairs(brand_names, brand_counts, row)?,
            })
        })
        .collect()
}

fn writer_properties() -> WriterProperties {
    use parquet::schema::types::ColumnPath;
    // Nearly unique columns gain nothing from a dictionary but pay for building one.
    let no_dictionary = ["event_time", "user_session", "first_seen", "last_seen"];
    no_dictionary
        .iter()
        .fold(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(ROWS_PER_FILE)),
            |builder, column| {
                builder.set_column_dictionary_enabled(ColumnPath::from(*column), false)
            },
        )
        .build()
}

/// The process role's state files: a dictionary only for the category and brand names.
/// Ids, session hashes and times are nearly unique, so a dictionary there is built for
/// every checkpoint only to be discarded.
fn state_writer_properties() -> WriterProperties {
    use parquet::schema::types::ColumnPath;
    let names = |column: &str| ColumnPath::new(vec![column.into(), "list".into(), "item".into()]);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROWS_PER_FILE))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(names("category_names"), true)
        .set_column_dictionary_enabled(names("brand_names"), true)
        .build()
}

/// A Parquet file on local disk written batch by batch (each batch becomes row groups).
pub struct ParquetFileWriter {
    path: std::path::PathBuf,
    writer: ArrowWriter<std::io::BufWriter<std::fs::File>>,
}

impl ParquetFileWriter {
    /// Creates the file (and its directory).
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| Error::file(path, e))?;
        let writer = ArrowWriter::try_new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            schema,
            Some(writer_properties()),
        )?;
        Ok(ParquetFileWriter {
            path: path.to_path_buf(),
            writer,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.writer.write(batch)?)
    }

    /// Writes the footer and flushes the file.
    pub fn close(self) -> Result<()> {
        let mut out = self.writer.into_inner()?;
        out.flush().map_err(|e| Error::file(&self.path, e))
    }
}

/// One batch -> a complete Parquet file in memory.
pub fn batch_to_parquet(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// Parquet bytes -> its batches.
pub fn parquet_to_batches(bytes: impl Into<Bytes>) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.into())?
        .with_batch_size(64 * 1024)
        .build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Reads a local Parquet file into batches.
pub fn read_parquet_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    parquet_to_batches(bytes)
}

pub fn encode_events(events: &[Event]) -> Result<Vec<u8>> {
    batch_to_parquet(&events_to_batch(events)?)
}

pub fn decode_events(bytes: impl Into<Bytes>) -> Result<Vec<Event>> {
    flatten(parquet_to_batches(bytes)?, batch_to_events)
}

pub fn encode_profiles(profiles: &[Profile]) -> Result<Vec<u8>> {
    batch_to_parquet(&profiles_to_batch(profiles)?)
}

pub fn decode_profiles(bytes: impl Into<Bytes>) -> Result<Vec<Profile>> {
    flatten(parquet_to_batches(bytes)?, batch_to_profiles)
}

pub fn encode_states(records: &[StateRecord]) -> Result<Vec<u8>> {
    let mut writer =
        ArrowWriter::try_new(Vec::new(), states_schema(), Some(state_writer_properties()))?;
    writer.write(&states_to_batch(records)?)?;
    Ok(writer.into_inner()?)
}

/// Rows converted to Arrow at once by the chunked encoders.
pub const ENCODE_CHUNK_ROWS: usize = 64 * 1024;

/// One Parquet file from batches produced one at a time: only one chunk of rows is
/// converted to Arrow (and, when the chunks are moved out of their source, held) at once.
/// For whole-partition snapshots and states; empty chunks are skipped by the callers.
fn encode_batches(
    schema: SchemaRef,
    properties: WriterProperties,
    batches: impl Iterator<Item = Result<RecordBatch>>,
) -> Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties))?;
    for batch in batches {
        writer.write(&batch?)?;
    }
    Ok(writer.into_inner()?)
}

/// [`encode_profiles`] of profiles produced a chunk at a time.
pub fn encode_profile_chunks(chunks: impl Iterator<Item = Vec<Profile>>) -> Result<Vec<u8>> {
    encode_batches(
        profiles_schema(),
        writer_properties(),
        chunks
            .filter(|chunk| !chunk.is_empty())
            .map(|chunk| profiles_to_batch(&chunk)),
    )
}

/// [`encode_states`] of states produced a chunk of columns at a time (each dropped once
/// written).
pub fn encode_state_columns<'a>(chunks: impl Iterator<Item = StateColumns<'a>>) -> Result<Vec<u8>> {
    encode_batches(
        states_schema(),
        state_writer_properties(),
        chunks
            .filter(|chunk| !chunk.is_empty())
            .map(state_columns_to_batch),
    )
}

pub fn decode_states(bytes: impl Into<Bytes>) -> Result<Vec<StateRecord>> {
    flatten(parquet_to_batches(bytes)?, batch_to_states)
}

fn flatten<T>(
    batches: Vec<RecordBatch>,
    decode: fn(&RecordBatch) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut all = Vec::new();
    for batch in &batches {
        all.extend(decode(batch)?);
    }
    Ok(all)
}

/// `events/dt=YYYY-MM-DD`: the lake directory (object prefix) of one UTC day.
pub fn events_partition(day: i32) -> String {
    format!(
        "{}/dt={}",
        pipeline_config::layout::EVENTS_PREFIX,
        time::format_day(day)
    )
}

/// Splits events by UTC day, keeping their order within a day.
pub fn group_by_day(events: Vec<Event>) -> BTreeMap<i32, Vec<Event>> {
    let mut days: BTreeMap<i32, Vec<Event>> = BTreeMap::new();
    for event in events {
        days.entry(event.utc_day()).or_default().push(event);
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileBook, PROFILE_COLUMNS};

    fn events() -> Vec<Event> {
        vec![
            Event {
                event_time: 1_569_888_000_000_000,
                event_type: EventType::Purchase,
                product_id: u64::MAX,
                category_id: Some(2_053_013_555_631_882_655),
                category_code: Some("electronics.smartphone".into()),
                brand: Some("apple".into()),
                price_cents: crate::money::MAX_PRICE_CENTS,
                user_id: 541_312_140,
                user_session: Some("s".into()),
            },
            Event {
                event_time: 1_569_888_000_000_001 + 86_400_000_000,
                event_type: EventType::RemoveFromCart,
                product_id: 1,
                category_id: None,
                category_code: None,
                brand: None,
                price_cents: 0,
                user_id: 541_312_140,
                user_session: None,
            },
        ]
    }

    #[test]
    fn events_round_trip_through_parquet() {
        let bytes = encode_events(&events()).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(decode_events(bytes).unwrap(), events());
    }

    #[test]
    fn events_schema_has_the_section_3_columns() {
        let names: Vec<String> = events_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            crate::generator::HEADER.split(',').collect::<Vec<_>>()
        );
    }

    #[test]
    fn profiles_round_trip_with_exact_column_names() {
        let mut book = ProfileBook::new();
        events().iter().for_each(|e| book.apply(e).unwrap());
        let profiles = book.profiles();
        let batch = profiles_to_batch(&profiles).unwrap();
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, PROFILE_COLUMNS);
        let back = decode_profiles(encode_profiles(&profiles).unwrap()).unwrap();
        assert_eq!(back, profiles);
        assert_eq!(back[0].revenue_cents, crate::money::MAX_PRICE_CENTS);
        let halves = profiles.chunks(1).map(<[Profile]>::to_vec);
        let chunked = decode_profiles(encode_profile_chunks(halves).unwrap()).unwrap();
        assert_eq!(chunked, profiles);
        let nothing = encode_profile_chunks(std::iter::empty()).unwrap();
        assert_eq!(decode_profiles(nothing).unwrap(), vec![]);
    }

    #[test]
    fn states_round_trip() {
        let mut book = ProfileBook::new();
        events().iter().for_each(|e| book.apply(e).unwrap());
        let mut more = events();
        more[0].user_id = 7;
        more[1].user_id = 8;
        more.iter().for_each(|e| book.apply(e).unwrap());
        let records: Vec<StateRecord> = book
            .user_ids_sorted()
            .into_iter()
            .filter_map(|id| book.record(id))
            .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(
            decode_states(encode_states(&records).unwrap()).unwrap(),
            records
        );
        assert_eq!(decode_states(encode_states(&[]).unwrap()).unwrap(), vec![]);
        // Only the name columns carry a dictionary.
        let bytes = Bytes::from(encode_states(&records).unwrap());
        let metadata = parquet::file::reader::SerializedFileReader::new(bytes)
            .map(|r| parquet::file::reader::FileReader::metadata(&r).clone())
            .unwrap();
        let with_dictionary: Vec<String> = metadata.row_groups()[0]
            .columns()
            .iter()
            .filter(|c| c.dictionary_page_offset().is_some())
            .map(|c| c.column_path().string())
            .collect();
        assert_eq!(
            with_dictionary,
            vec!["category_names.list.item", "brand_names.list.item"]
        );
        // Chunked: the same rows back, across chunk boundaries, and nothing for none.
        let many: Vec<StateRecord> = (0..(ENCODE_CHUNK_ROWS as u64 * 2 + 7))
            .map(|i| StateRecord {
                user_id: i + 1,
                ..records[0].clone()
            })
            .collect();
        let chunks = many.chunks(ENCODE_CHUNK_ROWS).map(|chunk| {
            let mut columns = StateColumns::default();
            chunk.iter().for_each(|r| columns.push_record(r));
            columns
        });
        assert_eq!(
            decode_states(encode_state_columns(chunks).unwrap()).unwrap(),
            many
        );
        assert_eq!(
            decode_states(encode_state_columns(std::iter::empty()).unwrap()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn partitions_by_utc_day() {
        assert_eq!(events_partition(18_170), "events/dt=2019-10-01");
        let days = group_by_day(events());
        assert_eq!(
            days.keys().copied().collect::<Vec<_>>(),
            vec![18_170, 18_171]
        );
    }

    #[test]
    fn foreign_parquet_is_a_schema_error() {
        let bytes = encode_events(&events()).unwrap();
        assert!(matches!(decode_profiles(bytes), Err(Error::Schema(_))));
    }
}
