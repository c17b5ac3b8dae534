//! `datapipeline-operator`: prints the CRD (`crd`) or runs the controller (`run`, the
//! default) with the in-cluster or local kubeconfig, serving `/metrics` and `/healthz`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use datapipeline_operator::{
    controller::{self, validate::OperatorSettings, RunConfig},
    crd,
    metrics::{self, Metrics},
};
use kube::runtime::events::Reporter;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "Kubernetes operator for DataPipeline resources")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the DataPipeline CustomResourceDefinition as YAML.
    Crd {
        /// Print the Helm chart's template instead (behind `crds.enabled`, kept on uninstall).
        #[arg(long)]
        helm: bool,
    },
    /// Run the controller (the default).
    Run(RunArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// pipeline-runtime image for pipelines that do not name one.
    #[arg(
        long,
        env = "DATAPIPELINE_RUNTIME_IMAGE",
        default_value = "pipeline-runtime:latest"
    )]
    runtime_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "DATAPIPELINE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of the /metrics and /healthz server.
    #[arg(
        long,
        env = "DATAPIPELINE_HTTP_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    http_address: SocketAddr,
    /// Seconds between reconciles of a healthy pipeline (drift repair).
    #[arg(long, env = "DATAPIPELINE_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between readings of each pipeline's Kafka offsets (status throughput and
    /// lag-driven autoscaling); rates average over four intervals.
    #[arg(
        long = "observe-interval",
        env = "DATAPIPELINE_OBSERVE_INTERVAL_SECONDS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    observe_interval_seconds: u64,
    /// Log format.
    #[arg(long, env = "DATAPIPELINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let metrics = Arc::new(Metrics::new());
    let server = tokio::spawn(metrics::serve(args.http_address, metrics.clone()));
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let config = RunConfig {
        settings: OperatorSettings {
            runtime_image: args.runtime_image,
        },
        namespace: args.watch_namespace,
        resync: Duration::from_secs(args.resync_seconds),
        observe_interval: Duration::from_secs(args.observe_interval_seconds),
        reporter: Reporter {
            controller: "datapipeline-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    };
    tracing::info!(address = %args.http_address, "serving /metrics and /healthz");
    tokio::select! {
        result = controller::run(client, config, metrics) => {
            result.context("running the controller")?;
        }
        result = server => {
            result.context("metrics server task")?
                .with_context(|| format!("serving /metrics on {}", args.http_address))?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // kube's TLS uses ring; when a build of the whole workspace also enables aws-lc-rs
    // (through the runtime's S3 client), rustls cannot pick a provider on its own and
    // panics at the first connection. Choosing one explicitly makes every build behave alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd { helm }) => {
            let yaml = if helm {
                crd::helm_crd_template()
            } else {
                crd::crd_yaml()
            }
            .context("serialising the CRD")?;
            print!("{yaml}");
            Ok(())
        }
        Some(Command::Run(args)) => runtime()?.block_on(run(args)),
        None => runtime()?.block_on(run(cli.run)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
