"""The model's signature: what ``predict`` takes and returns, as MLflow records and enforces it.

``image`` is declared ``string`` rather than ``binary``: MLflow base64-decodes a ``binary`` column
itself and fails on a null, which would forbid mixing ``image`` rows and ``pixels`` rows in one
JSON request. On the wire nothing changes (binary data in JSON is base64 text either way); the
model decodes the base64 itself, strictly, and names the row when it cannot. In-process callers
(pandas, Spark's ``binaryFile`` content) pass raw bytes.

``pixels`` is declared ``string`` too, and holds either a list of 784 numbers (JSON) or the same
numbers as text (``"0 0 12 255 ..."`` or ``"[0, 0, 12, ...]"``, for CSV). Two MLflow behaviours
force this: ``Array(double)`` refuses JSON integers (it will not convert int64 to float64), and
0-255 integers are how pixel rows are usually sent; and any column that is not a scalar type makes
MLflow's CSV parser fail outright (with a stack trace in the response). A ``string`` column passes
lists through unchanged, so JSON, CSV and in-process callers all work. The model checks each pixel
row itself (784 finite numbers, 0-255 or 0-1) and names the row when it is wrong.
"""

from __future__ import annotations

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "image", required=False),
        ColSpec("string", "pixels", required=False),
    ]
)
OUTPUT_SCHEMA = Schema(
    [
        ColSpec("long", "label"),
        ColSpec("double", "confidence"),
        ColSpec(Array("double"), "probabilities"),
        ColSpec("boolean", "uncertain"),
        ColSpec("string", "error", required=False),
        ColSpec(Array("double"), "input", required=False),
    ]
)
# The defaults a request gets unless its ``params`` say otherwise (``pyfunc.Params``).
UNCERTAIN_BELOW = 0.8
PARAMS_SCHEMA = ParamSchema(
    [
        ParamSpec("on_error", "string", "raise"),
        ParamSpec("uncertain_below", "double", UNCERTAIN_BELOW),
        ParamSpec("return_input", "boolean", False),
    ]
)

SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA, params=PARAMS_SCHEMA)
