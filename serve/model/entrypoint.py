"""The model's code entry point (MLflow "models from code").

MLflow copies this file into the logged model and runs it on load, with the model's
``code_paths`` on ``sys.path``: the model object is built from code, so loading a model never
unpickles anything.
"""

import mlflow

from serve.model.pyfunc import DigitClassifier

mlflow.models.set_model(DigitClassifier())
