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
        k8s::assert_forbidden(
            nodes.list(&Default::default()).await,
            "the operator may not list Nodes",
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

/// The RBAC objects of a rendering: (kind, namespace or "", name, rules as
/// (resources, verbs)).
type RbacObject = (String, String, String, Vec<(Vec<String>, Vec<String>)>);

fn rbac_objects(rendered: &str) -> anyhow::Result<Vec<RbacObject>> {
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    Ok(documents(rendered)?
        .into_iter()
        .filter(|d| d["apiVersion"] == "rbac.authorization.k8s.io/v1")
        .map(|d| {
            let rules = d["rules"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|r| (strings(&r["resources"]), strings(&r["verbs"])))
                .collect();
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rules,
            )
        })
        .collect())
}

/// 7b. `watchNamespaces` (merged with the older single `watchNamespace`) renders a Role
///     and a RoleBinding with the operator's rules in each listed namespace and no
///     ClusterRole or ClusterRoleBinding at all (the operator reads nothing
///     cluster-scoped), and hands the list to the operator; empty, the same rules come in
///     one ClusterRole. Secret writes are a rule of their own. Needs no server.
#[tokio::test]
async fn helm_template_with_watch_namespaces_renders_roles_not_a_cluster_role() -> anyhow::Result<()>
{
    let set = "crds.enabled=false,watchNamespaces={team-a,team-b},watchNamespace=team-b";
    let lint = k8s::helm(&["lint", "--strict", CHART, "--set", set]).await?;
    assert_eq!(
        lint_problems(&lint.stdout),
        Vec::<&str>::new(),
        "{}",
        lint.stdout
    );
    let render = |set: &'static str| async move {
        anyhow::Ok(
            k8s::helm(&[
                "template",
                "r",
                CHART,
                "--namespace",
                "ops",
                "--kube-version",
                "v1.34.4",
                "--set",
                set,
            ])
            .await?
            .stdout,
        )
    };
    let scoped = render(set).await?;
    let objects = rbac_objects(&scoped)?;
    let operator_rbac: Vec<(&str, &str, &str)> = objects
        .iter()
        .filter(|(_, _, _, rules)| {
            rules.is_empty()
                || rules
                    .iter()
                    .any(|(r, _)| r.contains(&"datapipelines".into()))
        })
        .filter(|(kind, _, name, _)| kind != "RoleBinding" || name == "r-datapipeline-operator")
        .map(|(kind, ns, name, _)| (kind.as_str(), ns.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        operator_rbac,
        [
            ("Role", "team-a", "r-datapipeline-operator"),
            ("Role", "team-b", "r-datapipeline-operator"),
            ("RoleBinding", "team-a", "r-datapipeline-operator"),
            ("RoleBinding", "team-b", "r-datapipeline-operator"),
        ]
    );
    assert!(
        objects
            .iter()
            .all(|(kind, _, _, _)| kind != "ClusterRole" && kind != "ClusterRoleBinding"),
        "{objects:?}"
    );
    // The only other RBAC is in the release namespace (leader election), never a
    // namespaced resource's rules elsewhere.
    for (kind, ns, name, rules) in &objects {
        if !["team-a", "team-b"].contains(&ns.as_str()) {
            assert_eq!(ns, "ops", "{kind} {name}");
            assert!(
                rules.iter().all(|(r, _)| !r.contains(&"secrets".into())),
                "{kind} {name} grants Secrets in the release namespace"
            );
        }
    }
    let secret_rules: Vec<&Vec<String>> = objects[objects
        .iter()
        .position(|(kind, ns, _, _)| kind == "Role" && ns == "team-a")
        .context("team-a Role")?]
    .3
    .iter()
    .filter(|(r, _)| r.contains(&"secrets".into()))
    .map(|(_, verbs)| verbs)
    .collect();
    assert_eq!(
        secret_rules,
        [
            &vec!["get".to_string(), "list".into(), "watch".into()],
            &vec!["create".to_string(), "patch".into(), "delete".into()]
        ]
    );
    assert!(
        scoped.contains(
            "- name: DATAPIPELINE_WATCH_NAMESPACES\n              value: \"team-a,team-b\""
        ),
        "{scoped}"
    );

    let cluster_wide = rbac_objects(&render("crds.enabled=false").await?)?;
    let kinds: Vec<(&str, &str)> = cluster_wide
        .iter()
        .filter(|(_, _, name, _)| name == "r-datapipeline-operator")
        .map(|(kind, ns, _, _)| (kind.as_str(), ns.as_str()))
        .filter(|(kind, _)| kind.starts_with("Cluster"))
        .collect();
    assert_eq!(kinds, [("ClusterRole", ""), ("ClusterRoleBinding", "")]);
    assert!(
        !cluster_wide.iter().any(|(kind, _, _, rules)| kind == "Role"
            && rules
                .iter()
                .any(|(r, _)| r.contains(&"datapipelines".into()))),
        "{cluster_wide:?}"
    );
    Ok(())
}

/// 7c. Installed with `watchNamespaces` (two namespaces), the chart's Roles suffice for
///     the operator: impersonating its ServiceAccount, which may not list DataPipelines
///     cluster-wide, the in-process controller (one controller per namespace) brings the
///     external-services example to Running in the first namespace and reports the
///     missing Secret of the same pipeline in the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_with_watch_namespaces_grants_enough_per_namespace() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-helm-ns").await?;
    let team_a = TestNamespace::create(&client, "e2e-team-a").await?;
    let team_b = TestNamespace::create(&client, "e2e-team-b").await?;
    let release = k8s::unique_name("dpo");
    let set = format!(
        "crds.enabled=false,watchNamespaces={{{},{}}}",
        team_a.name, team_b.name
    );
    let installed = k8s::helm(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &ns.name,
        "--set",
        &set,
    ])
    .await;
    let outcome = async {
        installed?;
        let fullname = format!("{release}-datapipeline-operator");
        let account = format!("system:serviceaccount:{}:{fullname}", ns.name);
        let as_operator = k8s::client_as(Some(&account)).await?;
        let everywhere: Api<DataPipeline> = Api::all(as_operator.clone());
        k8s::assert_forbidden(
            everywhere.list(&Default::default()).await,
            "no cluster-wide list",
        );
        let controller = RunningController::start_in(&as_operator, &[&team_a.name, &team_b.name]);
        let example = k8s::repo_root().join("examples/external-services.yaml");
        k8s::apply_file(&client, &team_a.name, &example).await?;
        let pipeline = k8s::yaml_documents(&example)?
            .into_iter()
            .find(|d| d["kind"] == "DataPipeline")
            .context("the DataPipeline")?;
        k8s::apply_raw(&client, &team_b.name, pipeline).await??;

        let in_a: Api<DataPipeline> = Api::namespaced(client.clone(), &team_a.name);
        k8s::wait_until_running(&in_a, SHOP, READY_TIMEOUT)
            .await
            .map_err(|e| match controller.ensure_running() {
                Ok(()) => e.context(format!("as {account}: see the log for Forbidden")),
                Err(stopped) => e.context(stopped),
            })?;
        let in_b: Api<DataPipeline> = Api::namespaced(client.clone(), &team_b.name);
        k8s::wait_for(
            &in_b,
            SHOP,
            "SecretNotFound in the second namespace",
            Duration::from_secs(60),
            |dp: Option<&DataPipeline>| {
                dp.and_then(|dp| k8s::pipeline_condition(dp, "KafkaReady"))
                    .is_some_and(|c| c.reason == "SecretNotFound")
            },
        )
        .await?;
        assert_eq!(
            controller.reconciles("failed"),
            0,
            "reconciles failed as {account}"
        );
        anyhow::Ok(())
    }
    .await;
    let _ = k8s::helm(&["uninstall", &release, "--namespace", &ns.name]).await;
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
