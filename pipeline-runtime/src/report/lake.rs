//! Reads what the report needs from a local lake directory (as `run` writes it): the
//! profiles from `profiles/**.parquet`, and from `events/**.parquet` a [`RevenueTally`]
//! (only the five columns it needs). Does file I/O; the computation is in the parent
//! module.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Decimal128Array, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{Report, RevenueTally};
use crate::error::{Error, Result};
use crate::event::EventType;
use crate::profile::Profile;
use crate::progress::Progress;

/// Every `*.parquet` file under `dir`, sorted by path.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::file(&current, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::file(&current, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn profile_files(dir: &Path) -> Result<Vec<PathBuf>> {
    parquet_files(&dir.join(pipeline_config::layout::PROFILES_PREFIX))
}

fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    parquet_files(&dir.join(pipeline_config::layout::EVENTS_PREFIX))
}

/// Reads every profile of a local lake (`DIR/profiles/**.parquet`).
pub fn read_profiles(dir: &Path) -> Result<Vec<Profile>> {
    read_profile_files(&profile_files(dir)?, &mut |_| {})
}

fn read_profile_files(files: &[PathBuf], file_done: &mut dyn FnMut(&Path)) -> Result<Vec<Profile>> {
    let mut profiles = Vec::new();
    for file in files {
        for batch in crate::parquet::read_parquet_file(file)? {
            profiles.extend(crate::parquet::batch_to_profiles(&batch)?);
        }
        file_done(file);
    }
    Ok(profiles)
}

/// Tallies the events of a local lake's events Parquet (see [`RevenueTally`]).
pub fn read_purchase_tally(dir: &Path) -> Result<RevenueTally> {
    let mut tally = RevenueTally::default();
    for file in event_files(dir)? {
        tally_file(&file, &mut tally)?;
    }
    Ok(tally)
}

/// Adds one events file to `tally`, reading only the columns it needs.
fn tally_file(file: &Path, tally: &mut RevenueTally) -> Result<()> {
    let handle = std::fs::File::open(file).map_err(|e| Error::file(file, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)?;
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        [
            "event_time",
            "event_type",
            "category_code",
            "brand",
            "price",
        ],
    );
    let schema_error = |what: &str| Error::Schema(format!("{}: {what}", file.display()));
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| schema_error(&format!("no column {name}")))
        };
        let times = column("event_time")?;
        let kinds = column("event_type")?;
        let categories = column("category_code")?;
        let brands = column("brand")?;
        let prices = column("price")?;
        let (Some(times), Some(kinds), Some(categories), Some(brands), Some(prices)) = (
            times.as_any().downcast_ref::<TimestampMicrosecondArray>(),
            kinds.as_any().downcast_ref::<StringArray>(),
            categories.as_any().downcast_ref::<StringArray>(),
            brands.as_any().downcast_ref::<StringArray>(),
            prices.as_any().downcast_ref::<Decimal128Array>(),
        ) else {
            return Err(schema_error("unexpected column types"));
        };
        for row in 0..batch.num_rows() {
            let kind = EventType::parse(kinds.value(row).as_bytes())
                .ok_or_else(|| schema_error(&format!("event_type {:?}", kinds.value(row))))?;
            let category = categories.is_valid(row).then(|| categories.value(row));
            let brand = brands.is_valid(row).then(|| brands.value(row));
            tally.add_event(
                crate::time::utc_day(times.value(row)),
                kind,
                category,
                brand,
                i64::try_from(prices.value(row)).unwrap_or(i64::MAX),
            );
        }
    }
    Ok(())
}

/// The report of a local lake directory (as written by `run`).
pub fn report_from_lake(dir: &Path) -> Result<Report> {
    report_from_lake_with(dir, &mut Progress::hidden())
}

/// [`report_from_lake`], counting the files read on `progress`.
pub fn report_from_lake_with(dir: &Path, progress: &mut Progress) -> Result<Report> {
    let profiles = profile_files(dir)?;
    let events = event_files(dir)?;
    progress.set_total(Some((profiles.len() + events.len()) as u64));
    let mut done = 0u64;
    progress.set(done);
    let profiles = read_profile_files(&profiles, &mut |_| {
        done += 1;
        progress.set(done);
    })?;
    let mut tally = RevenueTally::default();
    for file in &events {
        tally_file(file, &mut tally)?;
        done += 1;
        progress.set(done);
    }
    progress.finish();
    Ok(Report::from_profiles(&profiles, Some(&tally)))
}
