//! `audit`: lists the cluster's workloads (`list`), judges their images by the policy
//! (`audit`, pure), checks the mirrors with `verify`'s own code, and prints the report.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

mod list;

use crate::audit::{Audit, AuditReport, FailOn, MirrorCheck};
use crate::mutate::WORKLOADS;
use crate::policy::Policy;
use crate::source::PolicySource;
use list::{list_kind, Listed, Scope};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The policy to judge the cluster by: a file, or the ConfigMap the webhook applies.
    #[command(flatten)]
    pub policy: PolicySource,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Audit one namespace (default: all).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only objects with these labels (a Kubernetes label selector).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Check every image that would be rewritten against its mirror endpoints, as serve's verify
    /// does (credentials, TLS), one request per image and endpoint.
    #[arg(long)]
    pub verify: bool,
    /// Images checked at once with --verify.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// How long one image's check may take with --verify.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::server::args::duration)]
    pub verify_timeout: Duration,
    /// Objects per list request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<AuditFormat>,
    /// Exit 1 when any image is in one of these states (comma-separated). A kind that could not
    /// be listed always exits 1.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "missing")]
    pub fail_on: Vec<FailOn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Table,
    Json,
    Yaml,
    Markdown,
}

pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    if args.policy.policy_file.is_none() && args.policy.policy_configmap.is_none() {
        super::usage_error("name the policy: --policy-file FILE or --policy-configmap NS/NAME");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(audit(args))?;
    let format = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        AuditFormat::Table
    } else {
        AuditFormat::Json
    });
    let text = match format {
        AuditFormat::Table => report.to_table(),
        AuditFormat::Markdown => report.to_markdown(),
        AuditFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        AuditFormat::Yaml => crate::yaml::to_yaml(&serde_json::to_value(&report)?)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    let failures = report.failures(&args.fail_on);
    for f in &failures {
        eprintln!("audit: {f}");
    }
    Ok(match failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// A client for the cluster KUBECONFIG (or ~/.kube/config, or the Pod's in-cluster
/// configuration) names, in `--context` if given, and the API server's URL for messages.
async fn client(args: &AuditArgs) -> anyhow::Result<(kube::Client, String)> {
    let config = match &args.context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("cannot use kubeconfig context {context}"))?
        }
        None => kube::Config::infer().await.map_err(|_| {
            anyhow::anyhow!(
                "no Kubernetes configuration: set KUBECONFIG, write ~/.kube/config, or run in a Pod with a ServiceAccount"
            )
        })?,
    };
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client for the API server at {url}"))?;
    Ok((client, url))
}

async fn audit(args: &AuditArgs) -> anyhow::Result<AuditReport> {
    let (client, url) = client(args).await?;
    let (policy, source) = policy(args, &client)
        .await
        .with_context(|| format!("API server {url}"))?;
    let progress = match std::io::stderr().is_terminal() {
        true => ProgressBar::new_spinner(),
        false => ProgressBar::hidden(),
    };
    let scope = Scope {
        namespace: args.namespace.clone(),
        selector: args.selector.clone(),
        page_size: args.page_size,
    };
    let mut audit = Audit::default();
    let mut errors = Vec::new();
    for w in WORKLOADS {
        let (kind, plural) = (w.kind, w.plural);
        progress.set_message(format!("listing {plural}"));
        let mut this_kind = Audit::default();
        let listed = list_kind(&client, &scope, w, |event| match event {
            Listed::Object(object) => {
                if crate::audit::audited_alone(kind, &object) {
                    this_kind.add(&policy, kind, object);
                }
                progress.set_message(format!(
                    "listing {plural}: {} workloads",
                    audit.workloads() + this_kind.workloads()
                ));
                progress.tick();
            }
            Listed::Restart => this_kind = Audit::default(),
        })
        .await;
        match listed {
            Ok(()) => audit.merge(this_kind),
            Err(e) => errors.push(format!("{e} (API server {url})")),
        }
    }
    let checks = match args.verify {
        true => Some(verify(args, &policy, &client, &audit, &progress).await),
        false => None,
    };
    progress.finish_and_clear();
    Ok(audit.report(source, checks.as_ref(), errors))
}

/// The policy from its file or its ConfigMap, and how to name it in the report.
async fn policy(args: &AuditArgs, client: &kube::Client) -> anyhow::Result<(Policy, String)> {
    let (text, from) =
        super::policy_text(&args.policy, None, || async { Ok(client.clone()) }).await?;
    let loaded = Policy::load(&text)
        .map_err(|rejected| anyhow::anyhow!("{from} is not a valid policy: {rejected}"))?;
    let hash = crate::source::store::text_hash(&text);
    Ok((loaded.policy, format!("{from} (hash {hash})")))
}

/// Checks each image that would be rewritten, `--concurrency` at a time, with verify's checker:
/// its credentials, TLS settings, and one request per image and endpoint.
async fn verify(
    args: &AuditArgs,
    policy: &Policy,
    client: &kube::Client,
    audit: &Audit,
    progress: &ProgressBar,
) -> HashMap<String, MirrorCheck> {
    let mut policy = policy.clone();
    policy.verify.enabled = true;
    policy.verify.timeout = args.verify_timeout;
    let policy = Arc::new(policy);
    let cloud = Arc::new(crate::credentials::Cloud::new(
        crate::credentials::CloudSettings::default(),
        Arc::new(|_, _| {}),
    ));
    let pull_secrets = crate::secrets::PullSecrets::new(client.clone(), Some(cloud.clone()));
    let pull_secrets = match &args.policy.policy_configmap {
        // credentialsSecret names a Secret in the webhook's namespace: the ConfigMap's.
        Some(cm) => pull_secrets.in_namespace(&cm.namespace),
        None => pull_secrets,
    };
    let checker = crate::verify::Checker::new(crate::verify::Access {
        pull_secrets: Some(Arc::new(pull_secrets)),
        cloud: Some(cloud),
        on_check: None,
    });
    let images = audit.changing_images();
    progress.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_length(images.len() as u64);
    progress.set_message("checking mirrors");
    futures::stream::iter(images)
        .map(|image| {
            let (checker, policy) = (checker.clone(), policy.clone());
            async move {
                let verdicts = checker.verify(&policy, std::slice::from_ref(&image)).await;
                let check = verdicts.get(&image).map(MirrorCheck::of);
                (image, check)
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .filter_map(|(image, check)| {
            progress.inc(1);
            std::future::ready(check.map(|c| (image, c)))
        })
        .collect()
        .await
}
