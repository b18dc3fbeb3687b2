//! `tally attribute`: the batch attribution (SPEC section 6) and its summary.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use tally_attribution::{Model, Options, Progress, Summary, parse_bytes, parse_cohort, parse_duration};

use crate::config::Settings;

/// Options of `tally attribute`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes `conversions_dedup` and `attributed_conversions` for the window, replacing what an earlier \
run wrote for the same days. Unless --no-probabilistic, the conversions no touch matched are \
credited to the campaigns active in their cohort (SPEC 6.5: rows with method = 'probabilistic', \
the tables `probabilistic_totals` and `probabilistic_validation`); see docs/measurement.md.")]
pub(crate) struct AttributeArgs {
    /// First UTC day of conversions to attribute (default: the first day with conversions).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: the last day with conversions).
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Models, comma-separated: last_touch, first_touch, linear, position_based, time_decay, markov.
    #[arg(long, value_delimiter = ',', default_value = "last_touch,first_touch,linear,position_based,time_decay,markov")]
    models: Vec<Model>,
    /// Click lookback window (e.g. 7d, 36h).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    click_window: i64,
    /// Impression (view) lookback window.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    view_window: i64,
    /// Time-decay half-life.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    half_life: i64,
    /// Memory the run may use (e.g. 4G); the Markov journeys spill to disk beyond it.
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Skip the probabilistic cohort step.
    #[arg(long)]
    no_probabilistic: bool,
    /// Share of matched conversions held out to validate the probabilistic step.
    #[arg(long, default_value_t = 0.10)]
    holdout: f64,
    /// Cohort dimensions of the probabilistic step (the date is always one).
    #[arg(long, default_value = "date,geo_state,device_os", value_parser = parse_cohort)]
    cohort: (bool, bool),
}

pub(crate) async fn run(settings: &Settings, args: AttributeArgs) -> Result<()> {
    let store = settings.open_store()?;
    let keys = settings.keystore()?;
    let key_id = keys.pseudonymizer()?.key_id().to_owned();
    let mut models = args.models.clone();
    models.sort();
    models.dedup();
    let options = Options {
        from: args.from,
        to: args.to,
        models,
        click_window: args.click_window,
        view_window: args.view_window,
        half_life: args.half_life,
        memory_limit: args.memory_limit,
        probabilistic: !args.no_probabilistic,
        holdout: args.holdout,
        cohort_geo: args.cohort.0,
        cohort_os: args.cohort.1,
        ..Options::default()
    };
    let bar = spinner();
    let shown = bar.clone();
    let started = Instant::now();
    let progress = Arc::new(move |p: Progress| match p {
        Progress::Stage(s) => shown.set_message(s.to_owned()),
        Progress::Touches { scanned } => shown.set_message(format!("matching touches: {scanned} scanned")),
    });
    let summary = tally_attribution::run(&store, &key_id, &options, progress).await;
    bar.finish_and_clear();
    print_summary(&summary?, &options, started.elapsed().as_secs_f64());
    Ok(())
}

fn print_credit(s: &Summary, options: &Options, channels: &std::collections::BTreeSet<&String>) {
    println!("credit by channel:");
    print!("  {:<16}", "model");
    for c in channels {
        print!("{c:>12}");
    }
    println!();
    for m in &options.models {
        print!("  {:<16}", m.name());
        for c in channels {
            print!("{:>12.2}", s.credit.get(&(*m, (*c).clone())).copied().unwrap_or(0.0));
        }
        println!();
    }
}

fn spinner() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn print_summary(s: &Summary, options: &Options, secs: f64) {
    let Some((from, to)) = s.window else {
        println!("no conversions in the store: nothing to attribute");
        return;
    };
    println!("attributed {from} .. {to} in {secs:.2}s");
    let sources: Vec<String> = s.sources.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "conversions: {} copies → {} distinct ({} duplicates merged; {})",
        s.copies,
        s.conversions,
        s.merged,
        if sources.is_empty() { "none".to_owned() } else { sources.join(", ") }
    );
    let matched: usize = s.matched_by_key.values().sum();
    let by_key: Vec<String> = tally_attribution::MatchKey::ALL
        .iter()
        .map(|k| format!("{} {}", k.name(), s.matched_by_key.get(k.name()).copied().unwrap_or(0)))
        .collect();
    println!("matched deterministically: {matched} (strongest key: {}); no match: {}", by_key.join(", "), s.unmatched);
    println!(
        "touches: {} scanned, {} on a path; markov: {} non-converting paths{}",
        s.touches_scanned,
        s.path_touches,
        s.journeys,
        if s.spilled_steps > 0 { format!(", {} steps spilled to disk", s.spilled_steps) } else { String::new() }
    );
    let channels: std::collections::BTreeSet<&String> = s.credit.keys().map(|(_, c)| c).collect();
    if channels.is_empty() {
        println!("credit by channel: none (no conversion has a deterministic match)");
    } else {
        print_credit(s, options, &channels);
    }
    if !s.removal_effects.is_empty() {
        let effects: Vec<String> = s.removal_effects.iter().map(|((a, c), v)| format!("{a}/{c} {v:.3}")).collect();
        println!("markov removal effects: {}", effects.join(", "));
    }
    let stages: Vec<String> = s.timings.iter().map(|(n, t)| format!("{n} {t:.2}s")).collect();
    println!("stages: {}", stages.join(", "));
    let rows: Vec<String> = s.rows.iter().map(|(t, n)| format!("{t} {n} rows")).collect();
    println!("wrote {}; replaced {} earlier files", rows.join(", "), s.replaced_files);
    match &s.probabilistic {
        None => println!("probabilistic cohort attribution: skipped (--no-probabilistic)"),
        Some(p) => print_probabilistic(p),
    }
}

fn print_probabilistic(p: &tally_attribution::ProbabilisticSummary) {
    println!(
        "probabilistic cohort attribution: {} unmatched conversions, {:.1} credited to campaigns ({:.1} modeled organic); \
         {} in cohorts under the k-anonymity threshold suppressed, {} cohorts merged",
        p.unmatched,
        p.credited,
        (p.unmatched - p.suppressed) as f64 - p.credited,
        p.suppressed,
        p.merged_cohorts
    );
    for t in &p.totals {
        println!("  {:<10} {:<24} {:>9.1}  90% interval {:>8.1} – {:<8.1}", t.channel, t.campaign_id, t.credit, t.low, t.high);
    }
    match (p.wape, p.coverage) {
        (Some(wape), Some(coverage)) => println!(
            "self-validation on {} held-out matched conversions: WAPE {:.1}% by campaign, 90% intervals cover {:.0}% of campaigns",
            p.holdout,
            100.0 * wape,
            100.0 * coverage
        ),
        _ => println!("self-validation: no held-out conversions (too few matched conversions)"),
    }
}
