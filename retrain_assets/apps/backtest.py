"""`retrain-assets backtest`: the imperative shell around `core.offline`. Loads the history (a
scenario or history tables), runs the per-partition checks, the trainings and the policy replays
on a pool of processes, shows progress, and writes the table, the plots and the JSON."""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from retrain_assets.core.offline.backtest import ORACLE, BacktestPolicy, PolicyReplay, primary_metric, replay_policy, served_metrics
from retrain_assets.core.offline.lab import Lab, Model, train_windows_in_order, training_settings, training_windows, window_rows
from retrain_assets.core.offline.timeline import Timeline, prepare_timeline
from retrain_assets.core.offline.backtest_report import (
    DEFAULT_WINDOW,
    markdown_table,
    metric_words,
    per_batch,
    render_frontier,
    render_plot,
    summarize,
)
from retrain_assets.core.offline.frontier import FrontierPoint, FrontierVerdict, frontier_markdown, frontier_points, frontier_verdict
from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.offline.scenario import Delivery, history_deliveries, load_scenario, read_history, scenario_deliveries
from retrain_assets.core.spec import DatasetSpec, load_spec

# Expected cost order: the oracle trains on every batch, drift variants compute drift reports.
_COST_RANK = {ORACLE: 0, "drift": 1, "periodic": 2, "static": 3}


@dataclass
class BacktestResult:
    """Everything a backtest produced, with the seconds each phase took."""

    table: pd.DataFrame
    replays: list[PolicyReplay]
    batches: dict[str, pd.DataFrame]
    timeline: Timeline
    window_batches: int
    title: str
    seconds: dict[str, float] = field(default_factory=dict)


def history_from_files(paths: list[Path], spec: DatasetSpec, start_date: str | None, label_delay: int) -> Iterator[Delivery]:
    """Deliveries of one or more history tables (rows in time order, target included), read in the
    order given and replayed as the spec's partitions; labels land `label_delay` batches later."""
    history = pd.concat([read_history(path, spec) for path in paths], ignore_index=True)
    return history_deliveries(history, spec, start_date, label_delay)


def backtest_history(data: list[Path] | None, spec_path: Path | None, scenario_path: Path, days: int | None,
                     start_date: str | None, label_delay: int) -> tuple[DatasetSpec, Iterator[Delivery], str]:
    """The spec, the deliveries and a description of the history to replay: the tables in `data`
    (described by the spec at `spec_path`), else the scenario at `scenario_path`, `days` long when
    given, whose own spec the one at `spec_path` replaces when given."""
    if data:
        spec = load_spec(spec_path)
        return spec, history_from_files(data, spec, start_date, label_delay), ", ".join(p.name for p in data)
    scenario = load_scenario(scenario_path)
    if days is not None:
        scenario = replace(scenario, days=days)
    spec = scenario.spec if spec_path is None else load_spec(spec_path)
    return spec, scenario_deliveries(scenario), f"scenario {scenario.name}"


def run_backtest(deliveries: Iterable[Delivery], spec: DatasetSpec, policies: list[BacktestPolicy], base: Policy,
                 jobs: int = 1, progress: bool = True, window_batches: int | None = None, batches: int | None = None,
                 title: str = "") -> BacktestResult:
    """Replay the history under every policy and judge them on the same batches.

    jobs > 1 runs the per-partition checks, the oracle's trainings and the policy replays on that
    many processes; the result does not depend on it (only the measured seconds do).
    """
    window_batches = window_batches or DEFAULT_WINDOW[spec.partitions.granularity]
    if window_batches < 1:
        raise ValueError("--window-batches must be at least 1")
    if batches:
        deliveries = islice(deliveries, batches)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    # multiprocessing's Pool, not concurrent.futures: on Ctrl-C (or any failure) `terminate` stops
    # the workers at once, where an executor's shutdown waits for them and could hang.
    # Ctrl-C is held back while the workers spawn (seconds on a loaded machine): an interrupt then
    # would leave a half-built pool that nothing terminates. One pressed meanwhile arrives at the
    # first line of the `try`, once `pool` can be terminated.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = _spawn_pool(jobs) if jobs > 1 else None
    except BaseException:  # no pool to terminate: give Ctrl-C back before the error propagates
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    # One process: one BLAS/OpenMP thread too, as in the workers (measured on a loaded two-core
    # host: a multiclass training took 35-140 s with OpenMP threads, 2.2 s with one).
    limits = threadpool_limits(limits=1) if pool is None else None
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        deliveries = list(deliveries)
        with _bar(len(deliveries), "checking batches and labels", "batch", progress) as bar:
            def checked(fn: Callable, tasks: list) -> Iterator:
                results = pool.imap(fn, tasks, chunksize=8) if pool else map(fn, tasks)
                for item in results:
                    bar.update(1)
                    yield item

            timeline = prepare_timeline(deliveries, spec, map_fn=checked, policy=base)
        seconds["prepare"] = time.perf_counter() - started

        mark = time.perf_counter()
        models, reports = _prefetch_models(timeline, policies, base, pool, progress)
        seconds["oracle_trainings"] = time.perf_counter() - mark

        mark = time.perf_counter()
        replays = _replay_all(timeline, policies, base, models, reports, pool, progress)
        seconds["replays"] = time.perf_counter() - mark
    except BaseException:
        if pool:
            pool.terminate()
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pool:
            pool.close()
            pool.join()
        if limits is not None:
            limits.restore_original_limits()
    if not any(r.serving for r in replays):
        labeled = len(timeline.labeled_rows)
        raise ValueError(f"no policy ever had a model to serve: {labeled} of {len(timeline.steps)} batches got labels, and the "
                         f"first model needs {base.min_partitions_first_model} labeled partitions (policy.min_partitions_first_model) "
                         "and one more batch to be scored on; replay a longer history")
    threshold = base.promotion.operating_threshold
    served = {r.policy.name: served_metrics(timeline, r) for r in replays}
    judged = {"target": spec.target, "metric": primary_metric(base, spec.target)}
    table = summarize(replays, served, threshold, window_batches, **judged)
    per = {r.policy.name: per_batch(served[r.policy.name], r, threshold, window_batches, **judged) for r in replays}
    seconds["total"] = time.perf_counter() - started
    return BacktestResult(table, replays, per, timeline, window_batches, title or spec.name, seconds)


def _prefetch_models(timeline: Timeline, policies: list[BacktestPolicy], base: Policy, pool,
                     progress: bool) -> tuple[list[Model], dict]:
    """The oracle trains on every window: train them all up front, in parallel (runs of consecutive
    windows, each model also evaluated against its predecessor, the oracle's usual champion), so
    that every policy with the same training settings reuses them."""
    settings = {training_settings(p.policy): p.policy for p in policies if p.kind == ORACLE}
    tasks = []
    for policy in settings.values():
        windows = training_windows(timeline, policy)
        size = max(4, math.ceil(len(windows) / 48))  # enough runs to balance the workers, long enough to chain
        tasks += [([window_rows(timeline, w) for w in windows[i:i + size]], windows[i:i + size], timeline.spec, policy, base)
                  for i in range(0, len(windows), size)]
    models, reports = [], {}
    with _bar(sum(len(t[1]) for t in tasks), "training (every window)", "window", progress) as bar:
        for trained, evaluated in (pool.imap(_train_task, tasks) if pool else map(_train_task, tasks)):
            models += trained
            reports.update(evaluated)
            bar.update(len(trained))
    return models, reports


def _train_task(task):
    return train_windows_in_order(*task)


def _replay_all(timeline: Timeline, policies: list[BacktestPolicy], base: Policy, models: list[Model], reports: dict, pool,
                progress: bool) -> list[PolicyReplay]:
    total = len(policies) * len(timeline.steps)
    with _bar(total, "replaying policies", "step", progress) as bar:
        if pool is None:
            lab = Lab(timeline, base, models, reports)
            return [replay_policy(lab, policy, bar.update) for policy in policies]
        manager = get_context("spawn").Manager()
        try:
            steps = manager.Queue()
            token = uuid.uuid4().hex
            ordered = sorted(range(len(policies)), key=lambda i: _COST_RANK[policies[i].kind])
            pending = {i: pool.apply_async(_replay_task, ((token, timeline, base, models, reports, policies[i], steps),))
                       for i in ordered}
            done = threading.Event()

            def drain() -> None:
                while not done.is_set():
                    try:
                        bar.update(steps.get(timeout=0.2))
                    except queue.Empty:
                        continue

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            try:
                replays = {i: result.get() for i, result in pending.items()}
            finally:
                done.set()
                reader.join()
            bar.n = total
            bar.refresh()
            return [replays[i] for i in range(len(policies))]
        finally:
            manager.shutdown()


def _spawn_pool(jobs: int):
    """The workers' pool, spawned with SIGTERM at its default: an ignored SIGTERM (the parent's,
    e.g. a test runner's) survives exec, so a worker still importing when Ctrl-C's `terminate`
    came ignored it and the backtest hung (until `_one_thread_per_worker` restores it)."""
    restore = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL) if restore else None
    try:
        return get_context("spawn").Pool(jobs, initializer=_one_thread_per_worker)
    finally:
        if restore:
            signal.signal(signal.SIGTERM, previous)


def _one_thread_per_worker() -> None:
    """Workers are the parallelism: BLAS/OpenMP threads on top of them oversubscribe the cores
    (measured: a training took 0.65 s instead of 0.2 s with two workers of two BLAS threads each).
    Workers ignore Ctrl-C: the parent handles it and terminates them (a worker dying of it mid-task
    would leave the parent waiting for its result); SIGTERM, which terminates them, is always theirs."""
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # `Pool.terminate` stops a worker with SIGTERM: one that inherited an ignored SIGTERM (a parent
    # started from a process that ignores it, as the test suite's did) would be waited on forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threadpool_limits(limits=1)


_LABS: dict[str, Lab] = {}


def _replay_task(task) -> PolicyReplay:
    """In a worker: replay one policy; policies replayed by the same worker share its Lab's caches."""
    token, timeline, base, models, reports, policy, steps = task
    lab = _LABS.get(token)
    if lab is None:
        _LABS.clear()
        lab = _LABS[token] = Lab(timeline, base, models, reports)
    pending = [0]

    def report(n: int) -> None:
        pending[0] += n
        if pending[0] >= 25:
            steps.put(pending[0])
            pending[0] = 0

    replay = replay_policy(lab, policy, report)
    if pending[0]:
        steps.put(pending[0])
    return replay


def _bar(total: int, what: str, unit: str, enabled: bool):
    """A progress bar on stderr; off when asked, and when stderr is not a terminal (tqdm's disable=None)."""
    return tqdm(total=total, desc=what, unit=unit, disable=None if enabled else True, leave=False, dynamic_ncols=True)


@dataclass
class Frontier:
    """A backtest's cost/accuracy frontier (`core.offline.frontier`): its points, table and verdict."""

    points: list[FrontierPoint]
    table: str
    verdict: FrontierVerdict


def frontier_report(result: BacktestResult) -> Frontier:
    """The frontier of a backtest replayed with `frontier_policies` (it holds the default policy)."""
    metric = str(result.table["performance_metric"].iloc[0])
    points = frontier_points(result.table, [r.policy for r in result.replays])
    return Frontier(points, frontier_markdown(points, metric), frontier_verdict(points, metric))


def write_outputs(result: BacktestResult, out_dir: Path, command: str, source: str,
                  frontier: Frontier | None = None) -> dict[str, Path]:
    """backtest.json (everything), backtest.png (metric over time), backtest.md (the table) and,
    with more than one drift variant, tradeoff.png (retrains vs the mean primary metric); with a
    `frontier`, frontier.png, a Frontier section in backtest.md and "frontier" in the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{result.title}: {source}"
    window = result.window_batches
    paths = {"json": out_dir / "backtest.json", "plot": out_dir / "backtest.png", "table": out_dir / "backtest.md"}
    metric = str(result.table["performance_metric"].iloc[0])
    render_plot(result.timeline, result.replays, result.batches, paths["plot"], title, window, metric)
    words = "ROC AUC" if metric == "roc_auc" else metric_words(metric)
    if sum(r.policy.kind == "drift" for r in result.replays) > 1:
        paths["tradeoff"] = out_dir / "tradeoff.png"
        points = frontier_points(result.table, [r.policy for r in result.replays])
        render_frontier(points, paths["tradeoff"], f"{title}: retrains vs mean {words}", metric)
    table = markdown_table(result.table)
    if frontier is not None:
        paths["frontier"] = out_dir / "frontier.png"
        render_frontier(frontier.points, paths["frontier"], f"{title}: cost/accuracy frontier", metric)
        verdict = "\n".join(f"- {line}" for line in frontier.verdict.lines())
        table += f"\n\n## Frontier\n\n{frontier.table}\n\n{verdict}"
    write_text_atomically(f"{table}\n", paths["table"])
    timeline = result.timeline
    payload = {
        "command": command,
        "source": source,
        "dataset": timeline.spec.name,
        "granularity": timeline.spec.partitions.granularity,
        "task": timeline.spec.target.type,
        "performance_metric": metric,
        "window_batches": window,
        "seconds": result.seconds,
        "batches": [{"step": s.index, "partition": s.partition, "rows": s.n_rows, "quarantined": s.n_quarantined,
                     "blocked": s.blocked, "labels_delivered_for": s.labeled} for s in timeline.steps],
        "summary": json.loads(result.table.to_json(orient="records")),
        "policies": [{
            "name": r.policy.name, "kind": r.policy.kind, "every": r.policy.every, "params": dict(r.policy.params),
            "retrains": [vars(x) for x in r.retrains],
            "decisions": [{"step": step, "retrain": d.retrain, "trigger": d.trigger, "suppressed_by": d.suppressed_by,
                           "reason": d.reason, "numbers": {k: _finite(v) for k, v in d.numbers.items()}}
                          for step, d in sorted(r.decisions.items())],
            "per_batch": json.loads(result.batches[r.policy.name].to_json(orient="records")),
        } for r in result.replays],
    }
    if frontier is not None:
        payload["frontier"] = {"points": [p.as_json() for p in frontier.points], "verdict": frontier.verdict.as_json()}
    # The tables go through pandas' to_json (NaN -> null); default=str covers numpy scalars.
    write_text_atomically(json.dumps(payload, indent=1, default=str), paths["json"])
    return paths


def _finite(value):
    """A decision number as JSON holds it: NaN and infinities as null."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def default_jobs() -> int:
    """Both cores of the reference machine; never more than the machine has."""
    return max(1, min(2, os.cpu_count() or 1))
