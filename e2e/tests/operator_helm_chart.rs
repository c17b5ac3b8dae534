//! The operator's Helm chart against a real Kubernetes control plane (from
//! `e2e/services.sh up k8s`): it lints clean, installs (the operator Deployment becomes
//! ready through kwok, the CRD is the chart's and kept on uninstall), and its RBAC is
//! enough for the operator to bring a pipeline to Running. Fails when the API server is
//! unreachable. The monitoring extras (Grafana dashboard, PrometheusRule, runtime
//! PodMonitor) are rendered and linted offline by `helm template`/`helm lint`.
//! Run: `e2e/services.sh up k8s && cargo test -p e2e --test operator_helm_chart -- --test-threads=1`.

use std::time::Duration;

use anyhow::Context as _;
use datapipeline_operator::crd::DataPipeline;
use e2e::control_plane::{
    assert_children, inventory, lint_problems, CHART, READY_TIMEOUT, SHOP, SHOP_MANAGED_CHILDREN,
};
use e2e::k8s::{self, RunningController, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize as _;

/// 7. `helm lint` is clean; `helm install` of the chart (crds.enabled=true) into the
///    control plane works: the operator Deployment becomes ready through kwok, the CRD is
///    the chart's (kept on uninstall), and the chart's RBAC is enough for the operator: the
///    in-process controller, impersonating the chart's ServiceAccount, brings a pipeline to
///    Running and publishes its Events. `helm uninstall` leaves the CRD in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_lints_installs_and_keeps_the_crd() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;

    for values in [
        &[][..],
        &[
            "--set",
            "crds.enabled=false,watchNamespace=team-a,serviceMonitor.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(values);
        let lint = k8s::helm(&args).await?;
        assert!(
            lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}",
            lint.stdout
        );
        assert_eq!(
            lint_problems(&lint.stdout),
            Vec::<&str>::new(),
            "helm lint {values:?}"
        );
        println!("$ helm {}\n{}", args.join(" "), lint.stdout);
    }
    // The CRD is a template behind crds.enabled.
    let kinds = |rendered: &str| -> Vec<String> {
        rendered
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_string)
            .collect()
    };
    // Offline, helm assumes Kubernetes v1.20, below the chart's kubeVersion: name the real one.
    let with_crd = k8s::helm(&["template", "r", CHART, "--kube-version", "v1.34.4"])
        .await?
        .stdout;
    let without_crd = k8s::helm(&[
        "template",
        "r",
        CHART,
        "--kube-version",
        "v1.34.4",
        "--set",
        "crds.enabled=false",
    ])
    .await?
    .stdout;
    assert!(kinds(&with_crd).contains(&"CustomResourceDefinition".to_string()));
    assert!(!kinds(&without_crd).contains(&"CustomResourceDefinition".to_string()));

    // The CRD is cluster-wide and other tests (or people) may have DataPipelines: an existing
    // CRD is handed to the release (Helm's ownership metadata) instead of being deleted, so
    // `helm install` applies the chart's CRD over it.
    let ns = TestNamespace::create(&client, "e2e-helm").await?;
    let release = k8s::unique_name("dpo");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt(k8s::CRD_NAME).await?.is_some() {
        let adopt = serde_json::json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns.name},
        }});
        crds.patch(
            k8s::CRD_NAME,
            &PatchParams::default(),
            &Patch::Merge(&adopt),
        )
        .await?;
    }
    let installed = k8s::helm(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &ns.name,
        "--set",
        "crds.enabled=true",
        "--timeout",
        "120s",
    ])
    .await;
    // Never leave a release behind, whatever failed.
    let outcome = async {
        let installed = installed?;
        println!(
            "$ helm install {release} {CHART} -n {} --set crds.enabled=true\n{}",
            ns.name, installed.stdout
        );
        let fullname = format!("{release}-datapipeline-operator");

        let crd = k8s::wait_for(
            &crds,
            k8s::CRD_NAME,
            "the chart's CRD to be Established",
            Duration::from_secs(30),
            kube::runtime::wait::conditions::is_crd_established(),
        )
        .await?;
        let annotations = crd.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep")
        );
        assert_eq!(annotations.get("meta.helm.sh/release-name"), Some(&release));
        let crd_uid = crd.metadata.uid.clone();

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        let deployment = k8s::wait_for(
            &deployments,
            &fullname,
            "the operator Deployment to be Available",
            Duration::from_secs(120),
            |d: Option<&Deployment>| {
                d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                    s.ready_replicas == Some(1)
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Available" && c.status == "True")
                })
            },
        )
        .await?;
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .context("pod spec")?;
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("datapipeline-operator:0.1.0")
        );
        assert_eq!(container.args, Some(vec!["run".to_string()]));
        let runtime_image = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "DATAPIPELINE_RUNTIME_IMAGE")
            .and_then(|e| e.value.clone());
        assert_eq!(runtime_image.as_deref(), Some("pipeline-runtime:0.1.0"));
        assert_eq!(pod.service_account_name.as_deref(), Some(fullname.as_str()));
        let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        let metrics = services.get(&format!("{fullname}-metrics")).await?;
        let ports: Vec<(Option<String>, i32)> = metrics
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(ports, [(Some("http".to_string()), 8080)]);

        // The chart's RBAC suffices: the controller as the chart's ServiceAccount.
        let account = format!("system:serviceaccount:{}:{fullname}", ns.name);
        let as_operator = k8s::client_as(Some(&account)).await?;
        // Impersonation is in effect: what the chart does not grant is refused.
        let nodes: Api<Node> = Api::all(as_operator.clone());
        let refused = nodes
            .list(&Default::default())
            .await
            .expect_err("the operator may not list Nodes");
        assert_eq!(
            k8s::api_status(&refused).map(|s| s.code),
            Some(403),
            "{refused}"
        );
        let workload_ns = TestNamespace::create(&client, "e2e-helm-rbac").await?;
        let controller = RunningController::start(&as_operator, &workload_ns.name);
        k8s::apply_file(
            &client,
            &workload_ns.name,
            &k8s::repo_root().join("examples/shop-events.yaml"),
        )
        .await?;
        let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &workload_ns.name);
        k8s::wait_until_running(&pipelines, SHOP, READY_TIMEOUT)
            .await
            .map_err(|e| match controller.ensure_running() {
                Ok(()) => e.context(format!(
                    "as {account}: see the operator's log for Forbidden errors"
                )),
                Err(stopped) => e.context(stopped),
            })?;
        assert_children(
            &inventory(&client, &workload_ns.name).await?,
            &SHOP_MANAGED_CHILDREN,
        );
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), &workload_ns.name);
        k8s::poll_until(
            "a PhaseChanged Event written as the ServiceAccount",
            Duration::from_secs(30),
            || async {
                let found = events
                    .list(&Default::default())
                    .await?
                    .items
                    .into_iter()
                    .any(|e| e.reason.as_deref() == Some("PhaseChanged"));
                Ok(found.then_some(()))
            },
        )
        .await?;
        assert_eq!(
            controller.reconciles("failed"),
            0,
            "reconciles failed as {account}"
        );
        drop(controller);
        drop(workload_ns);

        let uninstalled = k8s::helm(&[
            "uninstall",
            &release,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "120s",
        ])
        .await?;
        println!("$ helm uninstall {release}\n{}", uninstalled.stdout);
        assert!(
            uninstalled
                .stdout
                .contains(&format!("release \"{release}\" uninstalled")),
            "{}",
            uninstalled.stdout
        );
        assert!(
            uninstalled
                .stdout
                .contains("These resources were kept due to the resource policy")
                && uninstalled
                    .stdout
                    .contains(&format!("[CustomResourceDefinition] {}", k8s::CRD_NAME)),
            "{}",
            uninstalled.stdout
        );
        k8s::poll_until(
            "the operator Deployment to be removed",
            Duration::from_secs(60),
            || async {
                Ok(deployments
                    .get_opt(&fullname)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await?;
        let kept = crds.get(k8s::CRD_NAME).await?;
        assert_eq!(
            kept.metadata.uid, crd_uid,
            "the CRD survived helm uninstall unchanged"
        );
        assert!(kept.metadata.deletion_timestamp.is_none());
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = k8s::helm(&["uninstall", &release, "--namespace", &ns.name]).await;
    }
    outcome
}

/// The objects of a multi-document YAML stream (`helm template` output).
fn documents(rendered: &str) -> anyhow::Result<Vec<serde_yaml::Value>> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(serde_yaml::Value::deserialize)
        .filter(|d| !matches!(d, Ok(serde_yaml::Value::Null)))
        .collect::<Result<_, _>>()
        .context("parsing helm template output")
}

/// 8. With `grafanaDashboard.enabled`, `prometheusRule.enabled` and
///    `runtimePodMonitor.enabled` the chart lints clean and renders: the dashboard
///    ConfigMap carries the Grafana sidecar's label (name and value configurable) and holds
///    `dashboards/datapipeline.json` as it is; the PrometheusRule's spec is
///    `rules/datapipeline.rules.yaml` (runbook links made absolute by
///    `prometheusRule.runbookBaseURL`); the PodMonitor scrapes the runtime pods and labels
///    them with their pipeline. Off by default. Needs no server.
#[tokio::test]
async fn helm_template_renders_the_dashboard_and_the_alert_rules() -> anyhow::Result<()> {
    let values = "grafanaDashboard.enabled=true,grafanaDashboard.label=dashboards,\
        grafanaDashboard.labelValue=datapipeline,prometheusRule.enabled=true,\
        prometheusRule.labels.release=kps,runtimePodMonitor.enabled=true,serviceMonitor.enabled=true,\
        prometheusRule.runbookBaseURL=https://example.org/dp/README.md";
    let lint = k8s::helm(&["lint", "--strict", CHART, "--set", values]).await?;
    assert_eq!(
        lint_problems(&lint.stdout),
        Vec::<&str>::new(),
        "{}",
        lint.stdout
    );
    let template = |set: &'static str| async move {
        let mut args = vec!["template", "r", CHART, "--kube-version", "v1.34.4"];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        documents(&k8s::helm(&args).await?.stdout)
    };
    let kind_of = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or_default().to_string();
    let monitoring = ["ConfigMap", "PrometheusRule", "PodMonitor"];
    let default = template("").await?;
    assert!(
        default
            .iter()
            .all(|d| !monitoring.contains(&kind_of(d).as_str())),
        "off by default"
    );

    let rendered = template(values).await?;
    let find = |kind: &str| {
        rendered
            .iter()
            .find(|d| kind_of(d) == kind)
            .with_context(|| format!("no {kind} rendered"))
    };
    let chart_dir = k8s::repo_root().join(CHART);

    let dashboard = find("ConfigMap")?;
    assert_eq!(
        dashboard["metadata"]["labels"]["dashboards"].as_str(),
        Some("datapipeline")
    );
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["datapipeline.json"]
            .as_str()
            .context("no datapipeline.json in the ConfigMap")?,
    )?;
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        chart_dir.join("dashboards/datapipeline.json"),
    )?)?;
    assert_eq!(json, file);

    let rule = find("PrometheusRule")?;
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["metadata"]["labels"]["release"].as_str(), Some("kps"));
    let rules_text = std::fs::read_to_string(chart_dir.join("rules/datapipeline.rules.yaml"))?;
    let mut expected: serde_yaml::Value = serde_yaml::from_str(&rules_text.replace(
        "runbook_url: README.md#",
        "runbook_url: https://example.org/dp/README.md#",
    ))?;
    assert_eq!(rule["spec"], expected);
    // Without a base URL the links stay as the file has them.
    let relative = documents(
        &k8s::helm(&[
            "template",
            "r",
            CHART,
            "--kube-version",
            "v1.34.4",
            "--set",
            "prometheusRule.enabled=true",
        ])
        .await?
        .stdout,
    )?;
    expected = serde_yaml::from_str(&rules_text)?;
    let relative_rule = relative
        .iter()
        .find(|d| kind_of(d) == "PrometheusRule")
        .context("no PrometheusRule")?;
    assert_eq!(relative_rule["spec"], expected);

    let pod_monitor = find("PodMonitor")?;
    assert_eq!(
        pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some("pipeline-runtime")
    );
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("http"));
    assert_eq!(
        endpoint["relabelings"][0]["targetLabel"].as_str(),
        Some("pipeline")
    );

    // The operator's per-pipeline gauges keep their own `namespace` label.
    let service_monitor = find("ServiceMonitor")?;
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    println!(
        "$ helm template r {CHART} --set {values}\n{}",
        rendered.iter().map(kind_of).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
