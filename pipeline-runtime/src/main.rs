//! `pipeline-runtime`: one binary, several roles. Parses the command line, sets up logging
//! and hands over to the library; no logic of its own.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use pipeline_runtime::{embedded, generator, progress, report};

#[derive(Debug, Parser)]
#[command(
    name = "pipeline-runtime",
    version,
    about = "E-commerce event pipeline runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per role; each holds its own flags.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write a REES46-shaped CSV file (same seed, same bytes).
    Generate(GenerateArgs),
    /// Run the whole job in one process: CSV -> events and profiles Parquet, rejected rows,
    /// summary.json and the business report on stdout.
    Run(RunArgs),
    /// Print the business report of a lake written by `run`, or of the search index.
    Report(ReportArgs),
    /// Publish CSV rows (a file, the landing prefix or the generator) to the events topic;
    /// rejected rows to the dead-letter topic.
    Ingest(pipeline_runtime::config::IngestArgs),
    /// Consumer-group member: events topic -> profiles, Parquet lake and search index.
    Process(pipeline_runtime::config::ProcessArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Number of data rows.
    #[arg(long)]
    events: u64,
    /// PRNG seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output CSV file.
    #[arg(long)]
    output: PathBuf,
    /// Replace about this many rows per million by broken rows (for testing rejection).
    #[arg(long, default_value_t = 0, hide = true)]
    bad_rows_per_million: u32,
    /// What the rows look like: `tidy` (9-digit user ids, times in order over October and
    /// November 2019) or `raw` (19-digit user ids, 158 days out of time order, brands that
    /// need CSV quoting).
    #[arg(long, value_enum, default_value_t = generator::Shape::Tidy)]
    shape: generator::Shape,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Input CSV file (REES46 header or the short form).
    #[arg(long)]
    input: PathBuf,
    /// Output directory (local lake).
    #[arg(long)]
    out: PathBuf,
    /// Do not print the report.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A local lake directory (as written by `run`).
    #[arg(
        long = "from",
        required_unless_present = "from_search",
        conflicts_with = "from_search"
    )]
    from: Option<PathBuf>,
    /// Read the profiles from this Elasticsearch/OpenSearch URL instead (credentials from
    /// DP_SEARCH_USERNAME / DP_SEARCH_PASSWORD or their _FILE variants).
    #[arg(long, value_name = "URL")]
    from_search: Option<String>,
    /// Index of profiles with --from-search (default: `<pipeline>-profiles`).
    #[arg(long, env = pipeline_config::env::SEARCH_INDEX)]
    search_index: Option<String>,
    /// Pipeline name, for the default index name.
    #[arg(long, env = pipeline_config::env::PIPELINE, default_value = "datapipeline")]
    pipeline: String,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the report as one self-contained HTML page (charts inline, nothing
    /// fetched when it is viewed) to this file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let result = run_command(cli.command);
    if let Err(error) = &result {
        write_termination_message(&format!("{error:#}"));
    }
    result
}

/// Where Kubernetes reads a container's termination message (the pod's
/// `terminationMessagePath` default); the kubelet creates it in every container.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Leaves the error that ended the process where `kubectl describe pod` and the operator
/// (the component's condition) show it. Outside a pod the file does not exist and nothing
/// is written.
fn write_termination_message(message: &str) {
    // The kubelet keeps at most 4096 bytes.
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    if std::path::Path::new(TERMINATION_LOG).exists() {
        let _ = std::fs::write(TERMINATION_LOG, &message[..end]);
    }
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Generate(args) => generate(args),
        Command::Run(args) => run(args),
        Command::Report(args) => print_report(args),
        Command::Ingest(args) => {
            let summary = block_on(pipeline_runtime::ingest::run(args))??;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Process(args) => {
            let summary = block_on(pipeline_runtime::process::run(args))??;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let json = std::env::var(pipeline_config::env::LOG_FORMAT).is_ok_and(|f| f == "json");
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// For the async roles: a multi-threaded runtime around one future.
fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let config = generator::GeneratorConfig {
        events: args.events,
        seed: args.seed,
        bad_rows_per_million: args.bad_rows_per_million,
        shape: args.shape,
    };
    let mut progress =
        progress::Progress::stderr("generate", Some(args.events), progress::Unit::Rows);
    generator::generate_file_with(config, &args.output, &mut progress)?;
    tracing::info!(events = args.events, seed = args.seed, output = %args.output.display(), "generated");
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut options = embedded::RunOptions::new(&args.input, &args.out);
    options.progress = std::io::stderr().is_terminal();
    let summary = embedded::run(&options)?;
    tracing::info!(
        accepted = summary.events_accepted,
        rejected = summary.events_rejected,
        profiles = summary.profiles,
        duration_ms = summary.duration_ms,
        events_per_second = summary.events_per_second as u64,
        out = %args.out.display(),
        "run finished"
    );
    if !args.quiet {
        print!("{}", summary.report.render());
    }
    Ok(())
}

fn print_report(args: ReportArgs) -> anyhow::Result<()> {
    let (report, index) = match (&args.from, &args.from_search) {
        (_, Some(url)) => {
            let names = pipeline_config::PipelineNames::new(&args.pipeline);
            let settings = pipeline_runtime::config::search_settings(
                url,
                args.search_index.as_deref(),
                None,
                &names,
                &pipeline_runtime::config::ProcessEnv,
            )?;
            let mut progress = progress::Progress::stderr("report", None, progress::Unit::Profiles);
            let profiles = block_on(pipeline_runtime::search::profiles_from_search_with(
                &settings,
                &mut progress,
            ))?
            .with_context(|| format!("reading profiles from {url}"))?;
            (
                report::Report::from_profiles(&profiles, None),
                Some(settings.index),
            )
        }
        (Some(dir), None) => {
            let mut progress = progress::Progress::stderr("report", None, progress::Unit::Files);
            let report = report::lake::report_from_lake_with(dir, &mut progress)
                .with_context(|| format!("reading the lake at {}", dir.display()))?;
            (report, None)
        }
        (None, None) => anyhow::bail!("give --from DIR or --from-search URL"),
    };
    if let Some(file) = &args.html {
        let source = match (&args.from_search, &index, &args.from) {
            (Some(url), Some(index), _) => report::html::Source::Search { url, index },
            (_, _, Some(dir)) => report::html::Source::Lake(dir),
            _ => anyhow::bail!("give --from DIR or --from-search URL"),
        };
        let page = report::html::render(&report, &source);
        std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
        tracing::info!(html = %file.display(), "report page written");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
