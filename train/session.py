"""One training session: check the store and the data, train, track, log the model, register it.

Order matters for "nothing half-done": the tracking store and the data are checked before a run
starts, and registration happens only after the run has logged everything, so a failed or
interrupted run registers nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow

from mnist_mlops.common.store import client, describe_store_failure, tracking_uri
from mnist_mlops.registry import api as registry
from mnist_mlops.registry.register import first_champion_refusal
from mnist_mlops.train import interrupt
from mnist_mlops.train.config import TrainConfig
from mnist_mlops.train.data import prepare, resolve_data_dir
from mnist_mlops.train.errors import TrainingError
from mnist_mlops.train.evaluation import calibrate, test_report
from mnist_mlops.train.loop import Hyperparameters, pick_device, train
from mnist_mlops.train.tracking import RunLogger

logger = logging.getLogger("mnist-train")

NEAR_CHANCE = 0.5  # a run ending below this accuracy says so in its output and its MLflow run


def _check_store(uri: str) -> None:
    """Fail early, with one line, when the tracking store cannot be opened or written."""
    try:
        mlflow.set_tracking_uri(uri)
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # SQLAlchemy, OS and HTTP errors all mean "store unusable"
        raise TrainingError(describe_store_failure(uri, exc)) from None


def run(config: TrainConfig, project_dir: Path) -> None:
    started = time.perf_counter()
    uri = tracking_uri()
    _check_store(uri)
    data = prepare(resolve_data_dir(config.data_dir), config.val_samples, config.seed, config.max_train_samples)
    device = pick_device()
    hp = Hyperparameters(config.epochs, config.batch_size, config.lr, config.weight_decay, config.seed)
    tracker = RunLogger()
    with mlflow.start_run() as active:
        run_id = active.info.run_id
        logger.info("run %s: %d training, %d validation images on %s", run_id, len(data.train), len(data.val), device)
        tracker.start(config, data, str(device), project_dir)
        model = train(data, hp, on_epoch=tracker.epoch, device=device)
        temperature = calibrate(model, data.val, device)
        report = test_report(model, data.test, device, temperature)
        logger.info("test accuracy %.4f, calibration temperature %.3f", report.accuracy, temperature)
        if report.accuracy < NEAR_CHANCE:
            warning = (
                f"test accuracy {report.accuracy:.2%}: the network learned next to nothing (chance is 10%); "
                "train longer or on more images"
            )
            logger.warning(warning)
            mlflow.set_tag("warning", warning)
        tracker.finish(report, data.test.images.numpy(), data.test.labels.numpy())
        from mnist_mlops.train.export import log_model  # imports mlflow.pyfunc machinery: only when needed

        # A stop is honoured up to the last moments it leaves nothing behind: before the model is
        # logged, and before it is registered.
        interrupt.check()
        with tracker.timed():
            info = log_model(model.cpu(), example_digit=data.test.images[0].numpy(), temperature=temperature)
        if config.card_samples:
            interrupt.check()
            from mnist_mlops.train.card import log_card, model_card

            scores = model_card(info.model_uri, data.root, config.card_samples)  # evaluation, not tracking
            with tracker.timed():
                log_card(scores, run_id)
        version = None
        if config.register:
            interrupt.check()
            with tracker.timed():
                version = registry.register(
                    config.model_name,
                    info.model_uri,
                    run_id,
                    report.accuracy,
                    data.fingerprint,
                    model_id=info.model_id,
                    tracking_uri=uri,
                    min_accuracy=config.champion_gate,
                )
        tracker.log_overhead(time.perf_counter() - started)
    _print_next_steps(uri, run_id, active.info.experiment_id, config, version)


def _print_next_steps(uri: str, run_id: str, experiment_id: str, config: TrainConfig, version) -> None:
    lines = [f"run {run_id} finished (experiment {experiment_id}, tracking store {uri})"]
    if version is not None:
        aliases = ", ".join(version.aliases) or "no alias"
        lines.append(f"registered {config.model_name} version {version.version} ({aliases})")
        refusal = first_champion_refusal(float(version.tags.get("test_accuracy", 0)), config.champion_gate)
        if (
            "champion" not in version.aliases
            and refusal
            and not registry.aliases(config.model_name, uri).get("champion")
        ):
            lines.append(f"not made champion: {refusal}")
        uri_of_model = f"models:/{config.model_name}@challenger"
        lines.append(f"serve it:   mlflow models serve -m {uri_of_model} -p 5001 --env-manager local")
    lines.append(f"look at it: mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000")
    print("\n".join(lines))
