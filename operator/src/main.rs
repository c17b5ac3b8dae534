//! `datapipeline-operator`: prints the CRD (`crd`) or runs the controller (`run`, the
//! default) with the in-cluster or local kubeconfig, serving `/metrics` and `/healthz`.
//! With leader election (the default) the controller runs only while this replica holds
//! the Lease; a leader that loses it stops reconciling and exits with an error (its pod
//! restarts and campaigns again), and on SIGTERM it releases the Lease.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use datapipeline_operator::{
    controller::{self, validate::OperatorSettings, RunConfig},
    crd,
    leader::{self, Elector, Timing},
    metrics::{self, Metrics},
};
use kube::runtime::events::Reporter;
use tokio::signal::unix::{signal, SignalKind};
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
    /// Watch only these namespaces, comma-separated (default: all namespaces); each gets
    /// its own watches, so namespaced Roles suffice.
    #[arg(
        long,
        alias = "watch-namespace",
        env = "DATAPIPELINE_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    watch_namespaces: Vec<String>,
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
    /// Reconcile only while holding a coordination.k8s.io Lease, so that several replicas
    /// can run with one active (`--leader-election=false`: always reconcile).
    #[arg(
        long,
        env = "DATAPIPELINE_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "DATAPIPELINE_LEADER_ELECTION_LEASE_NAME",
        default_value = leader::DEFAULT_LEASE_NAME
    )]
    leader_election_lease_name: String,
    /// Namespace of the Lease (default: the kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Seconds another replica waits, after the Lease last changed, before taking it over.
    #[arg(
        long = "leader-election-lease-duration",
        env = "DATAPIPELINE_LEADER_ELECTION_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    leader_election_lease_duration_seconds: u64,
    /// Seconds between the leader's renewals of the Lease.
    #[arg(
        long = "leader-election-renew-period",
        env = "DATAPIPELINE_LEADER_ELECTION_RENEW_PERIOD_SECONDS",
        default_value_t = 5
    )]
    leader_election_renew_period_seconds: u64,
    /// Seconds between tries of a waiting replica (and of a leader whose renewal failed).
    #[arg(
        long = "leader-election-retry-period",
        env = "DATAPIPELINE_LEADER_ELECTION_RETRY_PERIOD_SECONDS",
        default_value_t = 2
    )]
    leader_election_retry_period_seconds: u64,
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
    let timing = Timing::new(
        Duration::from_secs(args.leader_election_lease_duration_seconds),
        Duration::from_secs(args.leader_election_renew_period_seconds),
        Duration::from_secs(args.leader_election_retry_period_seconds),
    )
    .context("leader election settings")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    };
    tokio::pin!(shutdown);
    let metrics = Arc::new(Metrics::new());
    let mut server = tokio::spawn(metrics::serve(args.http_address, metrics.clone()));
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
    let config = RunConfig {
        settings: OperatorSettings {
            runtime_image: args.runtime_image,
            operator_pods: controller::validate::OperatorPods::from_environment()
                .map_err(anyhow::Error::msg)?,
        },
        namespaces: args.watch_namespaces,
        resync: Duration::from_secs(args.resync_seconds),
        observe_interval: Duration::from_secs(args.observe_interval_seconds),
        reporter: Reporter {
            controller: "datapipeline-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    };
    tracing::info!(address = %args.http_address, "serving /metrics and /healthz");
    let address = args.http_address;
    let server_ended = |result: Result<std::io::Result<()>, tokio::task::JoinError>| {
        result
            .context("metrics server task")?
            .with_context(|| format!("serving /metrics on {address}"))
    };
    // /healthz answers while this replica campaigns: waiting for the Lease is healthy.
    let mut elector = None;
    if args.leader_election {
        let namespace = args
            .leader_election_namespace
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = leader::identity_from_environment();
        tracing::info!(
            %identity,
            lease = %args.leader_election_lease_name,
            %namespace,
            "campaigning for the leader-election Lease"
        );
        let mut candidate = Elector::new(
            client.clone(),
            &namespace,
            &args.leader_election_lease_name,
            identity,
            timing,
        );
        tokio::select! {
            () = candidate.acquire() => {}
            result = &mut server => return server_ended(result),
            signal = &mut shutdown => {
                tracing::info!(signal, "stopping before leading");
                return Ok(());
            }
        }
        elector = Some(candidate);
    }
    metrics.set_leader(true);
    let outcome = {
        let lost = async {
            match elector.as_mut() {
                Some(elector) => elector.hold().await,
                None => std::future::pending().await,
            }
        };
        let controller = controller::run(client, config, metrics.clone());
        tokio::pin!(lost, controller);
        let lost_lease = |lost: leader::Lost| {
            metrics.set_leader(false);
            anyhow::anyhow!(
                "lost the leader-election Lease ({lost}): stopped reconciling; exiting so that \
                 this replica restarts and campaigns again"
            )
        };
        // On a lost Lease the controller is dropped: it stops reconciling at once.
        let signal = tokio::select! {
            result = &mut controller => Err(result.context("running the controller")),
            result = &mut server => Err(server_ended(result)),
            lost = &mut lost => return Err(lost_lease(lost)),
            signal = &mut shutdown => Ok(signal),
        };
        match signal {
            Err(ended) => ended,
            Ok(signal) => {
                // kube's controller got the signal too (`shutdown_on_signal`): it ends once
                // the reconciles under way finished; the Lease is renewed meanwhile.
                tracing::info!(signal, "stopping: finishing the reconciles under way");
                tokio::select! {
                    result = &mut controller => result.context("running the controller"),
                    lost = &mut lost => return Err(lost_lease(lost)),
                    () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                        tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still under way: stopping them");
                        Ok(())
                    }
                }
            }
        }
    };
    metrics.set_leader(false);
    if let Some(elector) = elector.as_mut() {
        // Another replica takes over at its next try rather than after the lease expires.
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "could not release the leader-election Lease");
        }
    }
    outcome
}

/// How long a stopping operator lets the reconciles under way finish before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
        Some(Command::Run(args)) => run_to_end(args),
        None => run_to_end(cli.run),
    }
}

/// Runs the controller; once it ends, waits at most 2 s for the runtime's other tasks, so a
/// leader that lost its Lease exits at once.
fn run_to_end(args: RunArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
