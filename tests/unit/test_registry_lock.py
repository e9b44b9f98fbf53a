"""The promotion lock on a real SQLite registry: a holder releasing it at the moment another
process's create is refused does not fail that process; it takes the lock on its next try."""

from __future__ import annotations

from mlflow import MlflowClient

from mnist_mlops.registry.lock import _try_acquire, lock_name, registry_lock, still_held

MODEL = "mnist-cnn"


def test_a_lock_released_while_a_create_is_refused_is_taken_on_the_next_try(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    assert _try_acquire(client, MODEL, "the-holder", lease=60.0)
    store = client._get_registry_client().store
    looked_up = store.get_registered_model

    def released_meanwhile(name):
        # MLflow's SQL store, its insert refused, reads the existing model to word the error:
        # the holder releases the lock just before that read.
        if name == lock_name(MODEL) and not released:
            released.append(True)
            client.delete_registered_model(name)
        return looked_up(name)

    released: list[bool] = []
    monkeypatch.setattr(store, "get_registered_model", released_meanwhile)
    with registry_lock(client, MODEL, wait=10.0) as token:
        assert released and still_held(client, MODEL, token)
    assert not still_held(client, MODEL, token)
