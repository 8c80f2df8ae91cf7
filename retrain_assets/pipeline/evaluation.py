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
import pandas as pd

from retrain_assets.core.catalog import MODEL_METRICS
from retrain_assets.core.evaluation.bootstrap import BOOTSTRAP_METRICS
from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.evaluation.metrics import inference_cost
from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.core.reports.evaluation import render_evaluation_html
from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.training.modeling import feature_frame, model_family, predict_scores, split_holdout, target_vector
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.core.policy.rollout import newest_evaluation
from retrain_assets.pipeline.shared.lookups import produced_candidate_version

PROMOTION_GATE = "evaluation_report_promotion_gate"


def report_rows(report: dict, gate, evaluated_at: pd.Timestamp, run_id: str, mlflow_run_id: str, html_path: str):
    """The report flattened into the three warehouse tables' new rows."""
    models = report["models"]
    summary = {
        "evaluated_at": evaluated_at,
        "challenger_version": report["challenger_version"],
        "champion_version": report["champion_version"] or "",
        "challenger_family": models[CHALLENGER]["model_family"],
        "holdout_partitions": ",".join(report["holdout_partitions"]),
        "n_rows": report["n_rows"],
        "comparison": report["comparison"],
        "confidence": report["confidence"],
        "challenger_roc_auc": models[CHALLENGER]["roc_auc"],
        "champion_roc_auc": models.get(CHAMPION, {}).get("roc_auc", float("nan")),
    }
    differences = {d["metric"]: d for d in report["differences"]}
    for metric in BOOTSTRAP_METRICS:
        d = differences.get(metric, {})
        for suffix, key in (("", "difference"), ("_lower", "lower"), ("_upper", "upper")):
            summary[f"diff_{metric}{suffix}"] = d.get(key, float("nan"))
    summary.update({"gate_passed": gate.passed, "gate_summary": gate.summary, "report_html": html_path,
                    "report_json": json.dumps({**report, "gate": gate.to_dict()}, default=float),
                    "mlflow_run_id": mlflow_run_id, "dagster_run_id": run_id})
    metrics = pd.DataFrame([{"evaluated_at": evaluated_at, "challenger_version": report["challenger_version"], "role": role,
                             "model_version": m["model_version"], "model_family": m["model_family"],
                             **{k: m.get(k, float("nan")) for k in MODEL_METRICS}} for role, m in models.items()])
    slices = pd.DataFrame(
        [{"kind": "segment", "slice_column": s["column"], "slice_value": s["value"], "role": s["role"], "n_rows": s["n_rows"],
          "positive_rate": s["positive_rate"], "roc_auc": s["roc_auc"], "accuracy": s["accuracy"]} for s in report["slices"]]
        + [{"kind": "fairness", "slice_column": f["attribute"], "slice_value": f["group"], "role": f["role"], "n_rows": f["n_rows"],
            "selection_rate": f["selection_rate"], "true_positive_rate": f["true_positive_rate"]} for f in report["fairness"]],
        columns=["kind", "slice_column", "slice_value", "role", "n_rows", "positive_rate", "roc_auc", "accuracy", "selection_rate",
                 "true_positive_rate"],
    )
    slices.insert(0, "challenger_version", report["challenger_version"])
    slices.insert(0, "evaluated_at", evaluated_at)
    return pd.DataFrame([summary]), metrics, slices


def report_markdown(report: dict, gate) -> str:
    """The report as the Dagster UI shows it: verdict, per-criterion results, metrics, differences."""
    lines = [f"**{gate.summary.split(':')[0]}** — {report['title']}", "", "| criterion | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in gate.criteria]
    roles = list(report["models"])
    lines += ["", "| metric | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "f1", "precision", "recall", "latency_ms_per_1000_rows",
                "model_size_bytes", "demographic_parity_difference", "equal_opportunity_difference"):
        lines.append(f"| {key} | " + " | ".join(f"{report['models'][r].get(key, float('nan')):.4g}" for r in roles) + " |")
    if report["differences"]:
        lines += ["", f"| challenger − champion | difference | {report['confidence']:.0%} CI |", "|---|---|---|"]
        lines += [f"| {d['metric']} | {d['difference']:+.4f} | [{d['lower']:+.4f}, {d['upper']:+.4f}] |" for d in report["differences"]]
    return "\n".join(lines)


def build_evaluation(spec: DatasetSpec) -> dg.Definitions:
    """Evaluation report and promotion gate for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy

    @dg.multi_asset(
        name=ns.name("evaluation"),
        ins=ns.ins("training_set", "candidate_model"),
        pool=ns.pool,
        group_name=ns.name("evaluation"),
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
        _, holdout, holdout_keys = split_holdout(training_set, policy.holdout_share)
        y = target_vector(holdout, spec)
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
                for table in ("evaluation_report", "evaluation_metrics", "evaluation_slices"):
                    yield dg.Output(warehouse.query(f"select * from {table}"), output_name=table,
                                    metadata={"status": "already evaluated", "challenger_version": versions[CHALLENGER]})
                return
        features = feature_frame(holdout, spec)
        scored = {}
        for role, version in versions.items():
            if version is None or (role == CHAMPION and version == versions[CHALLENGER]):
                continue
            model = model_registry.load(version)
            scored[role] = ScoredModel(version, model_family(model), predict_scores(model, holdout, spec),
                                       inference_cost(model, features))
            context.log.info(f"scored {role} version {version} on {len(holdout)} held-out rows")
        report = build_evaluation_report(holdout, y, scored[CHALLENGER], scored.get(CHAMPION), list(spec.segment_columns),
                                         spec.sensitive_attribute, policy, holdout_keys)
        gate = promotion_gate(report, policy)
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
        })
        summary, metrics, slices = report_rows(report, gate, evaluated_at, context.run_id, mlflow_run_id, str(html_path))
        context.log.info(gate.summary)
        yield dg.Output(warehouse.with_history("evaluation_report", summary), output_name="evaluation_report", metadata={
            "challenger_version": versions[CHALLENGER],
            "champion_version": versions[CHAMPION] or "none",
            "challenger_roc_auc": float(report["models"][CHALLENGER]["roc_auc"]),
            "gate": gate.headline,
            "report": dg.MetadataValue.md(report_markdown(report, gate)),
            **warehouse.report_links(html_path),
            **model_registry.run_link(mlflow_run_id),
        })
        yield dg.Output(warehouse.with_history("evaluation_metrics", metrics), output_name="evaluation_metrics",
                        metadata={"dagster/row_count": len(metrics)})
        yield dg.Output(warehouse.with_history("evaluation_slices", slices), output_name="evaluation_slices",
                        metadata={"dagster/row_count": len(slices), **warehouse.report_links(html_path)})

    @dg.asset_check(asset=ns.key("evaluation_report"), blocking=True, name=PROMOTION_GATE,
                    description="Promotion gate from the policy: absolute SLOs (ROC AUC, calibration, latency, fairness), "
                                "then superiority or non-inferiority on the bootstrap interval, slices and fairness vs the champion.")
    def evaluation_report_promotion_gate(evaluation_report: pd.DataFrame) -> dg.AssetCheckResult:
        """The gate applied again to the newest evaluation's report, criterion by criterion."""
        newest = newest_evaluation(evaluation_report)
        gate = promotion_gate(json.loads(newest["report_json"]), policy)
        return dg.AssetCheckResult(
            passed=gate.passed,
            description=gate.headline,
            metadata={"criteria": dg.MetadataValue.md("\n".join(
                          f"- {'pass' if c.passed else '**FAIL**'} `{c.name}`: {c.detail}" for c in gate.criteria)),
                      "failed": ", ".join(c.name for c in gate.criteria if not c.passed) or "none",
                      "challenger_version": str(newest["challenger_version"]),
                      "champion_version": str(newest["champion_version"]) or "none"},
        )

    return dg.Definitions(assets=[evaluation], asset_checks=[evaluation_report_promotion_gate])
