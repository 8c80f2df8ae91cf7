"""Monitoring: the champion's `reference_profile`, a `drift_report` per batch (with the drift-policy
check), and `retrain_decisions`, where the retrain policy is applied and every decision recorded
(with the freshness check on `deployed_model`)."""

import math
import pickle
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd

from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.reports.drift import render_drift_html
from retrain_assets.core.reports.drift_trend import TREND_COLUMNS, VERDICT_COLUMNS, render_drift_trend_html
from retrain_assets.core.reports.health import HEALTH_COLUMNS, HEALTH_PAGE, render_health_html
from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.monitoring.error_stream import reference_errors
from retrain_assets.core.monitoring.loss_estimation import fit_loss_model
from retrain_assets.core.monitoring.novelty import NoveltyModel, fit_for_spec
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.tasks import REGRESSION
from retrain_assets.core.training.modeling import content_hash, predict_outputs, split_holdout, target_vector
from retrain_assets.core.partitions import PARTITION_COLUMN, PERIODS
from retrain_assets.core.monitoring.batch_report import build_drift_report, scored_sample
from retrain_assets.core.monitoring.evidence import (SERVED_COLUMN, champion_served, latest_scorings, served_condition,
                                                    served_rows)
from retrain_assets.core.monitoring.multivariate import reference_sample
from retrain_assets.core.monitoring.segment_drift import segment_words
from retrain_assets.pipeline.shared.metadata import drifted_features_metadata, for_people
from retrain_assets.pipeline.shared.output_rules import rules_check_result, rules_check_specs
from retrain_assets.pipeline.shared.signal_checks import (error_stream_check_result, error_stream_check_spec, novelty_check_result,
                                                   novelty_check_spec)
from retrain_assets.core.policy.retrain import decide_retrain, drift_clause
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.core.roles import CHAMPION
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import latest_materialization_metadata
from retrain_assets.pipeline.shared.lookups import gather_history, latest_loss_model, latest_reference, table_columns

DRIFT_CHECK = "drift_report_policy"
DECISION_NUMBERS = ("labeled_partitions", "drifted_batches", "window_batches", "model_age_partitions", "realized_roc_auc",
                    "estimated_roc_auc", "baseline_roc_auc", "new_labeled_rows", "drifted_labeled_rows", "realized_performance",
                    "estimated_performance", "baseline_performance", "growth_ratio", "expected_gain", "drift_impact",
                    "realized_half_width", "novelty_window_share", "error_alarms",
                    "error_stream_shift", "rule_violation_window_share")


def follow_batch_and_labels(ns: Namespace) -> dg.AutomationCondition:
    """Re-run the batch's report when its raw rows or its labels change; labels are optional (the report
    exists before they arrive), the raw batch is not, and a blocked batch is never reported on. A new
    champion reference does not re-score history: each report is kept against the champion of its day.
    The keys are the dataset's own: an unprefixed key would select nothing."""
    raw_missing = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.missing()).allow(
        dg.AssetSelection.assets(ns.key("raw_batches")))
    return (
        (dg.AutomationCondition.newly_missing()
         | dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets(ns.key("reference_profile")))).since_last_handled()
        & ~raw_missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("on_batch_or_labels")


def build_monitoring(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """Reference profile, drift report, retrain decisions and their checks for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy
    rules = performance_rules(policy, spec.target)

    @dg.asset(key_prefix=ns.prefix, ins=ns.ins("training_set"), pool=ns.pool, group_name=ns.group, deps=ns.keys("deployed_model"), kinds={"duckdb"})
    def reference_profile(
        context: dg.AssetExecutionContext, training_set: pd.DataFrame, model_registry: ModelRegistry, warehouse: Warehouse
    ) -> dg.Output[pd.DataFrame]:
        """Distribution profile of the rows the champion was trained on (quantile bins, sorted
        values, category counts, the champion's predictions and the labels in the task's terms)
        plus a row sample, one row per champion version; for regression also the model of the
        champion's error fitted on its held-out rows (the label-free estimate's loss model).
        Checking a batch against it costs time in the batch's size only."""
        champion = model_registry.version_for(CHAMPION)
        if champion is None:  # the gate rejected the first model, or it awaits approval
            return dg.Output(warehouse.query("select * from reference_profile"),
                             metadata={"status": "no champion yet: nothing to profile"})
        if latest_reference(warehouse, champion) is not None:
            # A champion restored by a rollback keeps the profile of the data it was trained on.
            return dg.Output(warehouse.query("select * from reference_profile"),
                             metadata={"model_version": champion, "status": "profile of this champion already stored"})
        train, holdout, _ = split_holdout(training_set, policy.holdout_share)
        model = model_registry.load(champion)
        data_version = str(latest_materialization_metadata(context.instance, ns.key("training_set")).get("data_version", ""))
        profile = build_reference_profile(train, spec.numeric_features, spec.categorical_features,
                                          scores=predict_outputs(model, train, spec), labels=target_vector(train, spec),
                                          thresholds=policy.drift, created_from=data_version, target=spec.target,
                                          segments=spec.segment_columns)
        # The champion's held-out errors (the newest partitions of its window): the error stream's reference.
        profile = replace(profile, reference_errors=reference_errors(spec.target.type, target_vector(holdout, spec),
                                                                     predict_outputs(model, holdout, spec)) if len(holdout) else None)
        sample = reference_sample(train, spec.feature_columns, seed=policy.random_seed)
        loss_model, loss_note = champion_loss_model(model, holdout, spec)
        novelty_model, novelty_note = reference_novelty_model(model_registry, champion, train, spec)
        row = pd.DataFrame([{"model_version": champion, "data_version": data_version,
                             "created_at": pd.Timestamp.now(tz="UTC").tz_convert(None), "n_rows": len(train),
                             "profile_json": profile.to_json(), "sample_json": sample.to_json(orient="split", date_format="iso"),
                             "loss_model": loss_model, "novelty_model": novelty_model}])
        return dg.Output(warehouse.with_history("reference_profile", row),
                         metadata={"model_version": champion, "reference_rows": len(train), "data_version": data_version,
                                   "novelty_model": novelty_note, **({"loss_model": loss_note} if loss_note else {})})

    @dg.asset(
        key_prefix=ns.prefix,
        ins=ns.ins("raw_batches"),
        pool=ns.pool,
        partitions_def=partitions_def,
        group_name=ns.group,
        deps=ns.keys("labeled_batches", "reference_profile"),
        metadata={"partition_expr": PARTITION_COLUMN},
        automation_condition=follow_batch_and_labels(ns),
        check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=ns.key("drift_report"), partitions_def=partitions_def, blocking=False,
                                       description=f"WARN when this batch drifted; ERROR when {policy.drift_min_batches} of the "
                                                   f"last {policy.drift_window_batches} batches drifted (the policy's drift clause)."),
                     *rules_check_specs(spec, ns, partitions_def), novelty_check_spec(ns, partitions_def, policy),
                     error_stream_check_spec(ns, partitions_def, policy)],
        kinds={"duckdb", "html"},
    )
    def drift_report(
        context: dg.AssetExecutionContext, raw_batches: pd.DataFrame, model_registry: ModelRegistry, warehouse: Warehouse
    ):
        """This batch vs the champion's reference profile: per-feature statistics and verdicts,
        dataset drift share, out-of-distribution share, multivariate and prediction drift, the
        label-free performance estimate, and realized performance once labels arrived. The
        partition keeps the rows of every champion that scored it (`core.monitoring.evidence`):
        this run replaces its champion's rows only."""
        start, _ = partition_window(context)
        champion = model_registry.version_for(CHAMPION)
        reference = latest_reference(warehouse, champion) if champion else None
        if reference is None:
            yield dg.Output(pd.DataFrame(), metadata={"dagster/row_count": 0, "status": "no champion reference yet: nothing to compare against"})
            yield dg.AssetCheckResult(check_name=DRIFT_CHECK, passed=True, description="no champion reference yet")
            if spec.output_rules:
                yield rules_check_result(spec, None)
            yield novelty_check_result(None, policy)
            yield error_stream_check_result(None)
            return
        profile, sample = reference
        model = model_registry.load(champion)
        loss_model = latest_loss_model(warehouse, champion) if spec.target.type == REGRESSION else None
        labeled = warehouse.query(f"select * from labeled_batches where {PARTITION_COLUMN} = ?", [start])
        batch_hash = content_hash(raw_batches)
        # Labels of a batch change more often than its rows (late labels, review decisions): the
        # domain classifier, the costliest statistic, depends on the rows only, so it is reused.
        earlier = warehouse.query(f"select multivariate_auc from drift_report where {PARTITION_COLUMN} = ? and "
                                  "champion_version = ? and batch_hash = ? limit 1", [start, champion, batch_hash])
        scored = scored_sample(raw_batches, policy.random_seed)
        result = build_drift_report(
            profile, raw_batches, spec, policy.drift, reference_rows=sample if earlier.empty else None,
            scores=predict_outputs(model, scored, spec) if len(scored) else None, scored_rows=scored,
            labeled_scores=predict_outputs(model, labeled, spec) if len(labeled) else None,
            labels=target_vector(labeled, spec) if len(labeled) else None, seed=policy.random_seed,
            labeled_rows=labeled, loss_model=loss_model, metric=rules.metric, triggers=policy.triggers,
            novelty_model=latest_novelty_model(warehouse, champion),
        )
        if not earlier.empty:
            result.summary["multivariate_auc"] = float(earlier["multivariate_auc"].iloc[0])
        summary = {**result.summary, "champion_version": champion, "batch_hash": batch_hash}
        kept, served = kept_scorings(warehouse, start, champion)
        report = result.features.assign(**{PARTITION_COLUMN: start, "computed_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
                                            SERVED_COLUMN: served,
                                            **{k: v for k, v in summary.items() if k != "estimate_reliable"},
                                            # nullable boolean: a first report without labels must not create a "NULL"-typed column
                                            "estimate_reliable": pd.array([summary["estimate_reliable"]] * len(result.features),
                                                                          dtype="boolean")})
        html_path = Path(warehouse.reports_path) / "drift" / f"{context.partition_key}.html"
        write_text_atomically(render_drift_html(f"Drift report {context.partition_key} vs champion v{champion}",
                                                result.features, summary, profile, raw_batches), html_path)
        table = pd.concat([kept, report], ignore_index=True) if len(kept) else report
        trend_path = write_trend(warehouse, start, table)
        yield dg.Output(table, metadata=for_people({
            "dagster/row_count": len(report),
            "champion_served": served,
            "champions_kept": ", ".join(sorted({str(v) for v in kept["champion_version"]})) if len(kept) else "none",
            "drifted_features": f"{summary['n_drifted']}/{summary['n_features']}",
            "drift_share": summary["drift_share"],
            "dataset_drifted": summary["dataset_drifted"],
            "estimated_roc_auc": summary["estimated_roc_auc"],
            "realized_roc_auc": summary["realized_roc_auc"],
            "performance_metric": rules.metric,
            "estimated_performance": summary["estimated_performance"],
            "realized_performance": summary["realized_performance"],
            "realized_performance_low": summary["realized_performance_low"],
            "realized_performance_high": summary["realized_performance_high"],
            "champion_version": champion,
            **drifted_features_metadata(result.features),
            **warehouse.report_links(html_path),
            **warehouse.report_links(trend_path, name="drift_trend"),
            **warehouse.report_links(health_page(warehouse), name="model_health"),
        }))
        yield _drift_check(warehouse, start, champion, summary)
        if spec.output_rules:
            yield rules_check_result(spec, summary)
        yield novelty_check_result(summary, policy)
        yield error_stream_check_result(summary)

    def write_trend(warehouse: Warehouse, start, table: pd.DataFrame) -> Path:
        """Rewrite the trend page, each partition against the champion that served it: the other
        partitions' stored rows plus this one's as this run leaves them (`table`; the warehouse
        table reads empty before its first write)."""
        columns = table_columns(warehouse, "drift_report")
        stored = [c for c in TREND_COLUMNS if c not in VERDICT_COLUMNS or c in columns]  # a table older than them lacks them
        others = warehouse.query(f"select {', '.join(stored)} from drift_report where {PARTITION_COLUMN} <> ? "
                                 f"and {served_condition(columns)}", [start])
        this = served_rows(table)[list(TREND_COLUMNS)]
        history = pd.concat([others, this], ignore_index=True) if len(others) else this
        path = Path(warehouse.reports_path) / "drift" / "trend.html"
        write_text_atomically(render_drift_trend_html(history, policy.drift.dataset_drift_share, f"Drift over time: {spec.name}",
                                                      metric_label=rules.label), path)
        return path

    def _drift_check(warehouse: Warehouse, start, champion: str, summary: dict) -> dg.AssetCheckResult:
        # As the policy reads them (`history_from_warehouse`): each partition's newest scoring, this champion's.
        columns = table_columns(warehouse, "drift_report")
        segments = "drifted_segments" if "drifted_segments" in columns else "0 as drifted_segments"  # a table older than the column
        earlier = warehouse.query(f"select distinct {PARTITION_COLUMN}, dataset_drifted, {segments} from {latest_scorings(columns)} "
                                  f"where champion_version = ? and {PARTITION_COLUMN} < ? order by {PARTITION_COLUMN}", [champion, start])
        # As the policy counts them (`core.policy.retrain`): dataset drift, or a drifted segment with `drift.segment_drift` on.
        verdicts = [policy.drift.batch_drifted(bool(d), int(n) if pd.notna(n) else 0)  # the table reads empty before its first write
                    for d, n in zip(earlier.get("dataset_drifted", []), earlier.get("drifted_segments", []))]
        drifted_now = policy.drift.batch_drifted(summary["dataset_drifted"], summary["drifted_segments"])
        drift = drift_clause([*verdicts, drifted_now], policy)
        segment_text = segment_words(summary, policy.drift.segment_drift)
        words = (f"{summary['n_drifted']}/{summary['n_features']} features drifted in this batch"
                 + (f"; {segment_text}" if segment_text else "")
                 + f"; {'dataset or segment' if policy.drift.segment_drift else 'dataset'} drift in "
                 f"{drift.drifted_batches} of the last {drift.window_batches} batches (clause needs {policy.drift_min_batches} "
                 f"of {policy.drift_window_batches})")
        return dg.AssetCheckResult(
            check_name=DRIFT_CHECK, passed=not drifted_now and not drift.holds,
            severity=dg.AssetCheckSeverity.ERROR if drift.holds else dg.AssetCheckSeverity.WARN,
            description=words, metadata=for_people({"drifted_batches": drift.drifted_batches, "drift_share": summary["drift_share"],
                                         "drifted_segments": summary["drifted_segments"]}),
        )

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.group,
              deps=ns.keys("drift_report", "labeled_batches", "deployed_model"), kinds={"duckdb"},
              freshness_policy=decisions_freshness(spec))
    def retrain_decisions(context: dg.AssetExecutionContext, model_registry: ModelRegistry, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """Every retrain decision (triggered or suppressed), with the reason and the numbers.
        The retrain sensor launches `retrain_job` for each decision that says retrain."""
        history = gather_history(context.instance, ns, model_registry, warehouse, spec.target, policy.training_window_partitions)
        decision = decide_retrain(history, policy, spec.target)
        known = sorted(set(history.labeled_partitions) | {s.partition for s in history.signals})
        row = pd.DataFrame([{
            "decided_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
            "decision_id": context.run_id,
            "partition": known[-1] if known else "",
            "champion_version": history.champion_version or "",
            "retrain": decision.retrain,
            "trigger": decision.trigger,
            "suppressed_by": decision.suppressed_by,
            "reason": decision.reason,
            "window_from": decision.window_from,
            "performance_metric": rules.metric,
            **{k: float(decision.numbers.get(k, math.nan)) for k in DECISION_NUMBERS},
        }])
        table = warehouse.with_history("retrain_decisions", row)
        health = write_health_page(warehouse, spec, table)
        return dg.Output(table, metadata=for_people({
            "retrain": decision.retrain, "trigger": decision.trigger, "suppressed_by": decision.suppressed_by,
            "reason": decision.reason, "decision_id": context.run_id, "partition": known[-1] if known else "",
            "model_age_partitions": int(decision.numbers.get("model_age_partitions", 0)),
            **health,
        }))

    # Why a check and not Dagster's FreshnessPolicy: a model's age is counted in data time (newly
    # labeled partitions since its training window), while a FreshnessPolicy measures wall-clock time
    # since the asset's last materialization, at the asset level (any partition). A replay of six
    # weeks in three minutes would read as fresh, a champion promoted yesterday on year-old data too.
    # The wall-clock expectation that does fit, "the policy decides at least once per period", is
    # retrain_decisions' FreshnessPolicy (decisions_freshness).
    @dg.asset_check(asset=ns.key("deployed_model"), name="deployed_model_freshness", additional_deps=ns.keys("retrain_decisions"),
                    description=f"WARN when the champion is older than {policy.max_model_age_partitions} newly labeled partitions.")
    def deployed_model_freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        decided = latest_materialization_metadata(context.instance, ns.key("retrain_decisions"))
        age = decided.get("model_age_partitions")
        if age is None:
            return dg.AssetCheckResult(passed=True, description="no retrain decision recorded yet")
        fresh = int(age) < policy.max_model_age_partitions
        return dg.AssetCheckResult(passed=fresh, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"{age} partitions labeled since the last training window "
                                               f"(limit {policy.max_model_age_partitions})",
                                   metadata={"model_age_partitions": int(age), "partition": str(decided.get("partition", ""))})

    return dg.Definitions(assets=[reference_profile, drift_report, retrain_decisions], asset_checks=[deployed_model_freshness])


def reference_novelty_model(model_registry: ModelRegistry, version: str, train: pd.DataFrame,
                            spec: DatasetSpec) -> tuple[bytes, str]:
    """The champion's novelty model for `reference_profile.novelty_model`, and where it came from (the
    asset's `novelty_model` metadata): the one `candidate_model` logged with its training run
    (`ModelRegistry.novelty_model_blob`: checked, and an outage raises); fitted here
    (`champion_novelty_model`) only when the version has no logged one."""
    blob, where = model_registry.novelty_model_blob(version)
    if blob is None:
        return champion_novelty_model(train, spec), f"fitted at profiling: {where}"
    return blob, f"logged with v{version} ({where})"


def champion_novelty_model(train: pd.DataFrame, spec: DatasetSpec) -> bytes:
    """A champion's novelty model fitted on the rows it was trained on (`core.monitoring.novelty.fit_for_spec`,
    the rule `candidate_model` fits the one it logs by), pickled: `reference_novelty_model`'s fallback."""
    return pickle.dumps(fit_for_spec(train, spec, spec.policy.random_seed), protocol=pickle.HIGHEST_PROTOCOL)


def latest_novelty_model(warehouse: Warehouse, version: str) -> NoveltyModel | None:
    """The novelty model stored with a champion's reference profile; None for a champion profiled
    before novelty models existed (its `novelty_share` is NaN)."""
    found = warehouse.query("select * from reference_profile where model_version = ? order by created_at desc limit 1", [version])
    blob = found["novelty_model"].iloc[0] if "novelty_model" in found and len(found) else None
    return pickle.loads(bytes(blob)) if blob is not None and not pd.isna(blob) and len(blob) else None


def health_page(warehouse: Warehouse) -> Path:
    """Where the dataset's model-health page is (beside the drift/ and deployment/ folders)."""
    return Path(warehouse.reports_path) / HEALTH_PAGE


def write_health_page(warehouse: Warehouse, spec: DatasetSpec, decisions: pd.DataFrame) -> dict[str, dg.MetadataValue]:
    """Rewrite the model-health page from drift_report, `decisions` (the retrain_decisions table this
    run ends with), deployed_model and evaluation_report; its metadata links. retrain_decisions writes
    it: it runs after every drift report and every deployment step (the retrain sensor's inputs, and
    a deployment step follows each evaluation), so it sees all four."""
    present = table_columns(warehouse, "drift_report")
    columns = [c for c in HEALTH_COLUMNS if c in present]
    drift = (warehouse.query(f"select distinct {', '.join(columns)} from drift_report") if PARTITION_COLUMN in present
             else pd.DataFrame())
    rules = performance_rules(spec.policy, spec.target)
    path = health_page(warehouse)
    write_text_atomically(render_health_html(drift, decisions, warehouse.query("select * from deployed_model"), rules.label,
                                             rules.slo, rules.higher_is_better, spec.policy.drift.dataset_drift_share,
                                             f"Model health: {spec.name}", warehouse.query("select * from evaluation_report")),
                          path)
    return warehouse.report_links(path, name="model_health")


def kept_scorings(warehouse: Warehouse, start, champion: str) -> tuple[pd.DataFrame, bool]:
    """The partition's rows of the other champions that scored it (kept: the evidence their
    decisions read), and whether `champion`'s rows are the serving champion's (`core.monitoring.evidence`)."""
    scored = warehouse.query(f"select * from drift_report where {PARTITION_COLUMN} = ?", [start])
    if scored.empty:
        return scored, True
    mine = scored["champion_version"].astype(str) == str(champion)
    own = scored.loc[mine, SERVED_COLUMN] if SERVED_COLUMN in scored else [None] * int(mine.sum())
    kept = scored[~mine].reset_index(drop=True)
    return kept, champion_served(own, other_champion_scored=len(kept) > 0)


def champion_loss_model(model, holdout: pd.DataFrame, spec: DatasetSpec) -> tuple[bytes, str]:
    """A regression champion's loss model (`fit_loss_model` on its held-out rows: the newest
    partitions of its training window, which it was not trained on), pickled for the
    `reference_profile.loss_model` column, and a note when there is none; b"" for classification."""
    if spec.target.type != REGRESSION:
        return b"", ""
    try:
        fitted = fit_loss_model(holdout, predict_outputs(model, holdout, spec), target_vector(holdout, spec), spec,
                                seed=spec.policy.random_seed)
    except ValueError as error:  # too few held-out rows
        return b"", f"no loss model, so no label-free estimate: {error}"
    return pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL), ""


def decisions_freshness(spec: DatasetSpec) -> dg.FreshnessPolicy:
    """Wall-clock liveness of the monitoring loop: a batch lands every period and each one leads to a
    retrain decision, so no decision for a period warns and none for two periods fails."""
    first = pd.Timestamp(spec.partitions.start_date)
    period = (first + PERIODS[spec.partitions.granularity] - first).to_pytimedelta()  # a month: the first one's length
    return dg.FreshnessPolicy.time_window(fail_window=2 * period, warn_window=period)
