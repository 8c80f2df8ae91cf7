"""Evaluation: challenger vs champion on the held-out tail of the training window, and the
promotion gate (a blocking check: a failed gate stops deployment and leaves the champion).

Three warehouse tables keep every evaluation: `evaluation_report` (one row per evaluation, with
the differences and their intervals, the gate verdict and the full report as JSON),
`evaluation_metrics` (one row per model and evaluation) and `evaluation_slices` (per segment and
per sensitive group). The HTML report is linked from the metadata and logged to MLflow.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.catalog import MODEL_METRICS
from retrain_assets.core.deployment.outputs import INTERVAL_LEVEL, INTERVAL_TAG
from retrain_assets.core.evaluation.bootstrap import BOOTSTRAP_METRICS
from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.evaluation.metrics import inference_cost
from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.evaluation.task_metrics import conformal_half_width
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.core.reports.evaluation import render_evaluation_html
from retrain_assets.core.reports.evaluation_tasks import task_figures
from retrain_assets.core.reports.timeline import evaluation_partition
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.tasks import BINARY, METRICS, MULTICLASS, REGRESSION, TASK_METRICS
from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.training.modeling import feature_frame, model_family, predict_outputs, split_holdout, target_vector
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.core.policy.rollout import newest_evaluation
from retrain_assets.pipeline.shared.lookups import produced_candidate_version

PROMOTION_GATE = "evaluation_report_promotion_gate"


SLICE_METRICS = ("positive_rate", "roc_auc", "accuracy", "selection_rate", "true_positive_rate", "macro_roc_auc", "log_loss",
                 "macro_f1", "mae", "rmse", "r2")  # evaluation_slices' metric columns, binary's first


def report_rows(report: dict, gate, evaluated_at: pd.Timestamp, run_id: str, mlflow_run_id: str, html_path: str,
                metric: str = "roc_auc"):
    """The report flattened into the three warehouse tables' new rows; `metric` is the gate's primary
    metric (`performance_rules(policy, target).metric`), the `*_performance` columns' metric. The
    report's `partition` is its data time: the newest partition of the training window it used (its
    newest held-out partition)."""
    nan = float("nan")
    models = report["models"]
    summary = {
        "evaluated_at": evaluated_at,
        "challenger_version": report["challenger_version"],
        "partition": max(report["holdout_partitions"], default=""),
        "champion_version": report["champion_version"] or "",
        "challenger_family": models[CHALLENGER]["model_family"],
        "holdout_partitions": ",".join(report["holdout_partitions"]),
        "n_rows": report["n_rows"],
        "comparison": report["comparison"],
        "confidence": report["confidence"],
        "challenger_roc_auc": models[CHALLENGER].get("roc_auc", nan),
        "champion_roc_auc": models.get(CHAMPION, {}).get("roc_auc", nan),
    }
    differences = {d["metric"]: d for d in report["differences"]}
    for name in BOOTSTRAP_METRICS:
        d = differences.get(name, {})
        for suffix, key in (("", "difference"), ("_lower", "lower"), ("_upper", "upper")):
            summary[f"diff_{name}{suffix}"] = d.get(key, nan)
    primary = differences.get(metric, {})
    summary.update({"performance_metric": metric, "challenger_performance": models[CHALLENGER].get(metric, nan),
                    "champion_performance": models.get(CHAMPION, {}).get(metric, nan),
                    **{f"performance_difference{suffix}": primary.get(key, nan)
                       for suffix, key in (("", "difference"), ("_lower", "lower"), ("_upper", "upper"))}})
    summary.update({"gate_passed": gate.passed, "gate_summary": gate.summary, "report_html": html_path,
                    "report_json": json.dumps({**report, "gate": gate.to_dict()}, default=float),
                    "mlflow_run_id": mlflow_run_id, "dagster_run_id": run_id})
    metrics = pd.DataFrame([{"evaluated_at": evaluated_at, "challenger_version": report["challenger_version"], "role": role,
                             "model_version": m["model_version"], "model_family": m["model_family"],
                             **{k: m.get(k, nan) for k in MODEL_METRICS}} for role, m in models.items()])
    slices = pd.DataFrame(
        [{"kind": "segment", "slice_column": s["column"], "slice_value": s["value"], "role": s["role"], "n_rows": s["n_rows"],
          **{k: s.get(k, nan) for k in SLICE_METRICS}, "performance": s.get(metric, nan)} for s in report["slices"]]
        + [{"kind": "fairness", "slice_column": f["attribute"], "slice_value": f["group"], "role": f["role"], "n_rows": f["n_rows"],
            **{k: f.get(k, nan) for k in SLICE_METRICS if k not in ("positive_rate", "roc_auc")},
            "performance": f.get(metric, nan)} for f in report["fairness"]],
        columns=["kind", "slice_column", "slice_value", "role", "n_rows", *SLICE_METRICS, "performance_metric", "performance"],
    )
    slices["performance_metric"] = metric
    slices.insert(0, "challenger_version", report["challenger_version"])
    slices.insert(0, "evaluated_at", evaluated_at)
    return pd.DataFrame([summary]), metrics, slices


# The metrics the UI's markdown table lists per task (binary: as before).
_MARKDOWN_METRICS = {
    BINARY: ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "precision", "recall", "latency_ms_per_1000_rows",
             "model_size_bytes", "demographic_parity_difference", "equal_opportunity_difference"),
    MULTICLASS: (*TASK_METRICS[MULTICLASS], "latency_ms_per_1000_rows", "model_size_bytes", "accuracy_difference"),
    REGRESSION: (*TASK_METRICS[REGRESSION], "baseline_mae", "skill", "latency_ms_per_1000_rows", "model_size_bytes",
                 "relative_mae_difference"),
}


def report_markdown(report: dict, gate) -> str:
    """The report as the Dagster UI shows it: verdict, per-criterion results, metrics, differences."""
    task = report.get("task", BINARY)
    lines = [f"**{gate.summary.split(':')[0]}** — {report['title']}", "", "| criterion | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in gate.criteria]
    roles = list(report["models"])
    lines += ["", "| metric | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for key in _MARKDOWN_METRICS[task]:
        if task != BINARY and not any(key in report["models"][r] for r in roles):
            continue  # a fairness gap without a sensitive attribute
        name = key if task == BINARY else METRICS[key].label if key in METRICS else key
        lines.append(f"| {name} | " + " | ".join(f"{report['models'][r].get(key, float('nan')):.4g}" for r in roles) + " |")
    if report["differences"]:
        lines += ["", f"| challenger − champion | difference | {report['confidence']:.0%} CI |", "|---|---|---|"]
        lines += [f"| {d['metric'] if task == BINARY else METRICS[d['metric']].label} | {d['difference']:+.4f} | "
                  f"[{d['lower']:+.4f}, {d['upper']:+.4f}] |" for d in report["differences"]]
    return "\n".join(lines)


def build_evaluation(spec: DatasetSpec) -> dg.Definitions:
    """Evaluation report and promotion gate for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy
    rules = performance_rules(policy, spec.target)

    @dg.multi_asset(
        name=ns.name("evaluation"),
        ins=ns.ins("training_set", "candidate_model"),
        pool=ns.pool,
        group_name=ns.group,
        outs={
            "evaluation_report": dg.AssetOut(key_prefix=ns.prefix, kinds={"duckdb", "scikitlearn"}, description=(
                "One row per evaluation: challenger vs champion on the same time-held-out window, the "
                "challenger - champion differences with paired bootstrap intervals, and the gate verdict.")),
            "evaluation_metrics": dg.AssetOut(key_prefix=ns.prefix, kinds={"duckdb"}, description="Every metric of each model, per evaluation."),
            "evaluation_slices": dg.AssetOut(key_prefix=ns.prefix, kinds={"duckdb"}, description=(
                "Per-segment metrics and per-group fairness rates of each model, per evaluation.")),
        },
    )
    def evaluation(context: dg.AssetExecutionContext, training_set: pd.DataFrame, candidate_model: pd.DataFrame,
                   model_registry: ModelRegistry, warehouse: Warehouse):
        """Score challenger and champion on the held-out window and write the report."""
        train, holdout, holdout_keys = split_holdout(training_set, policy.holdout_share)
        produced = produced_candidate_version(context.instance, ns, candidate_model)
        candidate = candidate_model[candidate_model["model_version"].astype(str) == produced].sort_values("created_at").iloc[-1]
        versions = {CHALLENGER: str(candidate["model_version"]), CHAMPION: model_registry.version_for(CHAMPION)}
        previous = warehouse.query("select * from evaluation_report")
        if len(previous):
            newest = newest_evaluation(previous)
            evaluated_against = str(newest["champion_version"] or "") or None
            if str(newest["challenger_version"]) == versions[CHALLENGER] and versions[CHAMPION] in (evaluated_against,
                                                                                                   versions[CHALLENGER]):
                # Same challenger (so the same held-out rows) against the same champion, or it has
                # since been promoted on this very evaluation: a re-run would only repeat it.
                context.log.info(f"v{versions[CHALLENGER]} vs champion {versions[CHAMPION]} was already evaluated")
                for table in ("evaluation_report", "evaluation_metrics", "evaluation_slices"):  # same rows, same data time
                    yield dg.Output(warehouse.query(f"select * from {table}"), output_name=table,
                                    metadata=for_people({"partition": holdout_keys[-1], "status": "already evaluated",
                                                         "challenger_version": versions[CHALLENGER]}))
                return
        features = feature_frame(holdout, spec)
        scored = {}
        for role, version in versions.items():
            if version is None or (role == CHAMPION and version == versions[CHALLENGER]):
                continue
            model = model_registry.load(version)
            scored[role] = ScoredModel(version, model_family(model), predict_outputs(model, holdout, spec),
                                       inference_cost(model, features))
            context.log.info(f"scored {role} version {version} on {len(holdout)} held-out rows")
        report = evaluate_holdout(train, holdout, holdout_keys, scored, spec)
        gate = promotion_gate(report, policy, target=spec.target)
        evaluated_at = pd.Timestamp.now(tz="UTC").tz_convert(None)
        report["evaluated_at"] = f"{evaluated_at:%Y-%m-%d %H:%M:%S} UTC"
        html = render_evaluation_html({**report, "gate": gate.to_dict()})
        html_path = Path(warehouse.reports_path) / "evaluation" / f"{spec.name}-v{versions[CHALLENGER]}.html"
        write_text_atomically(html, html_path)
        mlflow_run_id = str(candidate["mlflow_run_id"])
        model_registry.log_evaluation(mlflow_run_id, report, gate.passed, html)
        model_registry.tag_version(versions[CHALLENGER], {
            "promotion_gate": "passed" if gate.passed else "failed",
            "evaluated_against": versions[CHAMPION] or "none (first model)",
            "evaluation_dagster_run_id": context.run_id,
            **({INTERVAL_TAG: repr(conformal_half_width(target_vector(holdout, spec), scored[CHALLENGER].scores, INTERVAL_LEVEL))}
               if spec.target.type == REGRESSION else {}),
        })
        summary, metrics, slices = report_rows(report, gate, evaluated_at, context.run_id, mlflow_run_id, str(html_path),
                                               rules.metric)
        context.log.info(gate.summary)
        yield dg.Output(warehouse.with_history("evaluation_report", summary), output_name="evaluation_report", metadata=for_people({
            "partition": summary["partition"].iloc[0],
            "challenger_version": versions[CHALLENGER],
            "champion_version": versions[CHAMPION] or "none",
            **({"challenger_roc_auc": float(report["models"][CHALLENGER]["roc_auc"])} if spec.target.type == BINARY else {}),
            "performance_metric": rules.metric,
            "challenger_performance": float(report["models"][CHALLENGER][rules.metric]),
            "gate": gate.headline,
            "report": dg.MetadataValue.md(report_markdown(report, gate)),
            **warehouse.report_links(html_path),
            **model_registry.run_link(mlflow_run_id),
        }))
        yield dg.Output(warehouse.with_history("evaluation_metrics", metrics), output_name="evaluation_metrics",
                        metadata={"partition": summary["partition"].iloc[0], "dagster/row_count": len(metrics)})
        yield dg.Output(warehouse.with_history("evaluation_slices", slices), output_name="evaluation_slices",
                        metadata=for_people({"partition": summary["partition"].iloc[0], "dagster/row_count": len(slices),
                                             **warehouse.report_links(html_path)}))

    @dg.asset_check(asset=ns.key("evaluation_report"), blocking=True, name=PROMOTION_GATE,
                    description=gate_description(spec))
    def evaluation_report_promotion_gate(evaluation_report: pd.DataFrame) -> dg.AssetCheckResult:
        """The gate applied again to the newest evaluation's report, criterion by criterion."""
        newest = newest_evaluation(evaluation_report)
        gate = promotion_gate(json.loads(newest["report_json"]), policy, target=spec.target)
        return dg.AssetCheckResult(
            passed=gate.passed,
            description=gate.headline,
            metadata=for_people({"criteria": dg.MetadataValue.md("\n".join(
                          f"- {'pass' if c.passed else '**FAIL**'} `{c.name}`: {c.detail}" for c in gate.criteria)),
                      "failed": ", ".join(c.name for c in gate.criteria if not c.passed) or "none",
                      "partition": evaluation_partition(newest), "challenger_version": str(newest["challenger_version"]),
                      "champion_version": str(newest["champion_version"]) or "none"}),
        )

    return dg.Definitions(assets=[evaluation], asset_checks=[evaluation_report_promotion_gate])


def evaluate_holdout(train: pd.DataFrame, holdout: pd.DataFrame, holdout_keys: list[str], scored: dict, spec: DatasetSpec) -> dict:
    """The evaluation report of the scored models (role -> `ScoredModel`, predictions in the task's
    shape) on the held-out rows: regression's baseline is the mean label of the challenger's
    training rows; multiclass and regression reports also carry what the HTML page draws
    (`core.reports.evaluation_tasks.task_figures`)."""
    target = spec.target
    y = target_vector(holdout, spec)
    baseline = float(np.mean(target_vector(train, spec))) if target.type == REGRESSION else None
    report = build_evaluation_report(holdout, y, scored[CHALLENGER], scored.get(CHAMPION), list(spec.segment_columns),
                                     spec.sensitive_attribute, spec.policy, holdout_keys, target=target, baseline=baseline)
    if target.type != BINARY:
        rules = performance_rules(spec.policy, target)
        report.update(task_figures(target, y, {role: m.scores for role, m in scored.items()},
                                   None if rules.slice_value is not None else rules.slice_share))
    return report


def gate_description(spec: DatasetSpec) -> str:
    """The blocking check's description, in the words of the task's primary metric."""
    rules = performance_rules(spec.policy, spec.target)
    slos = [rules.label] + (["skill over the training mean"] if rules.min_skill is not None else [])
    slos += [] if spec.target.type == REGRESSION else ["calibration"]
    return (f"Promotion gate from the policy: absolute SLOs ({', '.join(slos)}, latency, fairness), then superiority or "
            f"non-inferiority on the bootstrap interval of the {rules.label} difference, slices and fairness vs the champion.")
