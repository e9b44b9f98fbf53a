"""Linking a dataset to the active MLflow run, safely when other processes link the same one."""

from __future__ import annotations

import time

import mlflow
from mlflow.data.dataset import Dataset
from mlflow.exceptions import MlflowException

LINK_ATTEMPTS = 3


def link_dataset(dataset: Dataset, context: str) -> None:
    """Link ``dataset`` to the active run, tolerating another process creating it at the same moment.

    MLflow's SQL store looks an experiment's dataset up and inserts it when missing, without a
    lock between the two; two evaluations of the same data starting together (two promotions
    racing, each scoring the same champion) can both insert, and the loser fails on the unique
    key. By then the row exists, so a second attempt finds it and links it. Linking is idempotent
    (a run's link to a dataset is made once), which also makes ``mlflow.models.evaluate``'s own
    ``log_inputs`` of the same dataset afterwards find everything in place and write nothing.
    Parallel training runs (a sweep started at once) log the same MNIST splits and race the same way.
    """
    for attempt in range(1, LINK_ATTEMPTS + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException:
            if attempt == LINK_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
