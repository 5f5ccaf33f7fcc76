"""MLflow: one MLflow run per dgalign run, in the experiment named by $MLFLOW_EXPERIMENT_NAME
or else by the run's group (the sweep or reproduction directory's name), in the store that
$MLFLOW_TRACKING_URI names or else the local file store `<group dir>/mlruns`
(`mlflow ui --backend-store-uri <group dir>/mlruns`).

The identity goes in as tags (`dgalign.run_key` = the run's absolute directory, which finds
the same MLflow run again when a crashed run resumes or a run is exported twice), the
hyper-parameters and arguments as params. Resuming or exporting logs only the (metric, step)
pairs the MLflow run does not hold yet, so a store never holds a step twice.
"""

from __future__ import annotations

import os
import time

from dgalign.tracking.base import Point, RunInfo, flat_params

KEY_TAG = "dgalign.run_key"
MAX_PARAM = 6000  # MLflow's limit on a param's value length


def tracking_uri(info: RunInfo) -> str:
    """$MLFLOW_TRACKING_URI, else the file store `<store_dir>/mlruns`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    # MLflow 3 asks for an explicit opt-in to its file store, which is what a local,
    # server-less store is; it stays readable by every MLflow version
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (info.store_dir / "mlruns").resolve().as_uri()


class MlflowLogger:
    name = "mlflow"

    def start(self, info: RunInfo, history: list[Point]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri(info))
        experiment = self._experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or info.group)
        escaped = info.key.replace("'", "\\'")
        found = self.client.search_runs(
            [experiment], filter_string=f"tags.`{KEY_TAG}` = '{escaped}'", max_results=1
        )
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {KEY_TAG: info.key, **{f"dgalign.{k}": v for k, v in info.tags.items()}}
            run = self.client.create_run(experiment, tags=tags, run_name=info.name)
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:MAX_PARAM]) for k, v in flat_params(info.params).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        held: set[tuple[str, int]] = set()
        for key in sorted({k for _, scalars in history for k in scalars}):
            held.update((key, m.step) for m in self.client.get_metric_history(self.run_id, key))
        for step, scalars in history:
            self._log(step, {k: v for k, v in scalars.items() if (k, step) not in held})

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another job of the sweep created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if not scalars:
            return
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log(self, point: Point) -> None:
        self._log(*point)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def make() -> MlflowLogger:
    return MlflowLogger()
