//! The command line: `serve`, `dry-run`, `check` and `audit`. Errors are one readable line each.

mod audit;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::dryrun::{self, DryRunReport};
use crate::policy::{Loaded, Policy, Severity};
use crate::source::PolicySource;

#[derive(Debug, Parser)]
#[command(
    name = "image-mirror-webhook",
    version,
    about = "Rewrites Pod image references to mirrors by one cluster-wide policy, at admission"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS).
    Serve(Box<crate::server::ServeArgs>),
    /// Show what admission would do to objects or to single image references.
    DryRun(DryRunArgs),
    /// Validate a policy: print every error, warning and note with its line and column.
    Check(CheckArgs),
    /// What the policy would do to the workloads running in a cluster, and whether the mirrors
    /// have their images. Read-only.
    Audit(Box<audit::AuditArgs>),
}

#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// The policy to apply; without it, the first FILE is the policy.
    #[command(flatten)]
    pub policy: PolicySource,
    /// Explain this image reference instead of reading objects; one per --image, repeat it for
    /// more (a value is never taken for a file).
    #[arg(long, value_name = "REF", action = clap::ArgAction::Append)]
    pub image: Vec<String>,
    /// The namespace of objects that name none, as `kubectl apply -n` gives it them; with
    /// --image, the namespace the pod would be in. Exclusions apply.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// As `serve --pull-secrets`: attach the managed pull secrets the policy's credentials make
    /// (without it, as `serve` without it, none are).
    #[arg(long)]
    pub pull_secrets: bool,
    /// [POLICY] then files with Kubernetes objects (YAML or JSON, multi-document, List or
    /// AdmissionReview); `-` reads standard input, as does no file at all.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Json)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy to validate.
    #[command(flatten)]
    pub source: PolicySource,
    /// The policy to validate, as `check policy.yaml`.
    #[arg(
        value_name = "POLICY",
        conflicts_with_all = ["policy_file", "policy_configmap"],
        required_unless_present_any = ["policy_file", "policy_configmap"]
    )]
    pub policy: Option<PathBuf>,
}

/// Parses the command line and runs the command; clap exits with 2 on bad usage.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => crate::server::run(*args).map(|()| ExitCode::SUCCESS),
        Command::DryRun(args) => dry_run(&args),
        Command::Check(args) => check(&args),
        Command::Audit(args) => audit::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Objects read by `dry-run`, all files together; far past any manifest a person reviews.
const MAX_OBJECTS_BYTES: usize = 256 * 1024 * 1024;

/// A file (or `-`, standard input) as text, read no further than `max` bytes: a larger or endless
/// one (/dev/zero) is an error, not a wait.
pub(crate) fn read_text(path: &Path, max: usize) -> anyhow::Result<String> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > max {
            anyhow::bail!("standard input is larger than {max} bytes");
        }
        bytes
    } else {
        crate::source::file::read_capped(path, max)?
    };
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

/// The policy text `source` names (else the file `positional`), with its name for messages.
/// `client` gives the Kubernetes client, asked for only when the policy is a ConfigMap.
pub(crate) async fn policy_text<F, Fut>(
    source: &PolicySource,
    positional: Option<&Path>,
    client: F,
) -> anyhow::Result<(String, String)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<kube::Client>>,
{
    let max = crate::policy::MAX_POLICY_BYTES;
    match (
        source.policy_file.as_deref(),
        &source.policy_configmap,
        positional,
    ) {
        (Some(path), _, _) | (None, None, Some(path)) => {
            Ok((read_text(path, max)?, path.display().to_string()))
        }
        (None, Some(cm), _) => {
            let text = crate::source::configmap::read(&client().await?, cm).await?;
            Ok((text, format!("ConfigMap {cm}")))
        }
        (None, None, None) => anyhow::bail!("no policy named"),
    }
}

/// `policy_text` for the commands that run no runtime of their own (check, dry-run), with the
/// client KUBECONFIG or the in-cluster configuration gives.
fn policy_text_now(
    source: &PolicySource,
    positional: Option<&Path>,
) -> anyhow::Result<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(policy_text(source, positional, || async {
        kube::Client::try_default().await.map_err(|_| {
            anyhow::anyhow!("--policy-configmap needs a Kubernetes configuration: set KUBECONFIG, write ~/.kube/config, or run in a Pod with a ServiceAccount")
        })
    }))
}

/// Loads a policy, printing its diagnostics to standard error when it is rejected.
fn load_policy(source: &PolicySource, positional: Option<&Path>) -> anyhow::Result<Loaded> {
    let (text, name) = policy_text_now(source, positional)?;
    Policy::load(&text).map_err(|rejected| {
        for d in &rejected.diagnostics {
            if d.severity == Severity::Error {
                eprintln!("{name}:{d}");
            }
        }
        anyhow::anyhow!("{name} is not a valid policy")
    })
}

/// Exits 2 with clap's usage message, as a parse error would.
pub(crate) fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn dry_run(args: &DryRunArgs) -> anyhow::Result<ExitCode> {
    let mut files = args.files.clone();
    let named = args.policy.policy_file.is_some() || args.policy.policy_configmap.is_some();
    let positional = match (named, files.is_empty()) {
        (true, _) => None,
        (false, true) => usage_error(
            "name the policy: dry-run POLICY [FILE...], --policy-file POLICY or --policy-configmap NS/NAME",
        ),
        (false, false) => Some(files.remove(0)),
    };
    if !args.image.is_empty() && !files.is_empty() {
        usage_error(&format!(
            "--image explains references and reads no objects, but {} was given too",
            files[0].display()
        ));
    }
    let policy = std::sync::Arc::new(load_policy(&args.policy, positional.as_deref())?.policy);
    if let Some(line) = policy.unused_credentials(args.pull_secrets) {
        eprintln!("note: {line}");
    }
    let report = if args.image.is_empty() {
        if files.is_empty() {
            files.push(PathBuf::from("-"));
        }
        let mut items = Vec::new();
        for f in &files {
            let text = read_text(f, MAX_OBJECTS_BYTES)?;
            let mut read =
                dryrun::read_objects(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            items.append(&mut read);
        }
        for item in items.iter_mut().filter(|i| i.namespace.is_none()) {
            let own = item
                .object
                .pointer("/metadata/namespace")
                .and_then(serde_json::Value::as_str);
            if own.is_none_or(str::is_empty) {
                item.namespace = args.namespace.clone();
            }
        }
        let verdicts = verify(&policy, &dryrun::images(&items))?;
        let opts = dryrun::Options {
            verdicts: verdicts.as_ref(),
            pull_secrets: args.pull_secrets,
        };
        dryrun::evaluate_all(&policy, &items, opts)
    } else {
        let verdicts = verify(&policy, &args.image)?;
        dryrun::explain(
            &policy,
            &args.image,
            args.namespace.as_deref(),
            verdicts.as_ref(),
        )
    };
    print_report(&report, args.output)?;
    let failed = report
        .results
        .iter()
        .any(|r| r.error.is_some() || r.decisions.iter().any(|d| d.decision.error.is_some()));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// With `verify` on, the mirrors are asked, as admission would.
fn verify(
    policy: &std::sync::Arc<Policy>,
    images: &[String],
) -> anyhow::Result<Option<dryrun::Verdicts>> {
    if !policy.verify.enabled {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let checker = crate::verify::Checker::new(crate::verify::Access::default());
    Ok(Some(runtime.block_on(checker.verify(policy, images))))
}

fn print_report(report: &DryRunReport, format: Format) -> anyhow::Result<()> {
    let value = serde_json::to_value(report)?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&value)?,
        Format::Yaml => crate::yaml::to_yaml(&value)?,
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (text, name) = policy_text_now(&args.source, args.policy.as_deref())?;
    let (diagnostics, policy) = match Policy::load(&text) {
        Ok(l) => (l.diagnostics, Some(l.policy)),
        Err(r) => (r.diagnostics, None),
    };
    let valid = policy.is_some();
    let mut out = std::io::stdout().lock();
    for d in &diagnostics {
        writeln!(out, "{name}:{d}")?;
    }
    // `check` cannot know how `serve` will run: it says what the credentials need.
    if let Some(line) = policy.and_then(|p| p.unused_credentials(false)) {
        writeln!(out, "{name}: note: {line}")?;
    }
    let count = |s: Severity| diagnostics.iter().filter(|d| d.severity == s).count();
    let summary = format!(
        "{} error(s), {} warning(s), {} note(s)",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note)
    );
    if valid {
        writeln!(out, "{name}: valid policy; {summary}")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{name}: invalid policy; {summary}")?;
        Ok(ExitCode::FAILURE)
    }
}
