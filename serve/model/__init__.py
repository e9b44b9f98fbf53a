"""The model package: everything a logged model runs, decode -> preprocess -> CNN -> postprocess.

Self-contained: it imports only its own modules (relatively) and the model's logged requirements
(torch, numpy, pandas, scipy, Pillow, mlflow). Training imports it as ``mnist_mlops.serve.model``
(the network, the normalisation); every logged model carries a copy under the name
``mnist_model_<hash of its files>`` (``mnist_mlops.train.export``), which no host process imports.
"""

# Torch threads per process for the served model, when set (read by ``pyfunc.load_context``):
# batch scoring's workers and Spark's Python workers set it to the cores each of them owns. Defined
# here, in the one import-light module both the shipped model and the batch command line load.
THREADS_ENV = "MNIST_TORCH_THREADS"

# Decoded pixels one call may spend (read by ``decode.DecodeBudget``): unset, a serving default;
# 0, no bound. Batch jobs set 0: a chunk of a job is not a client's request.
REQUEST_PIXELS_ENV = "MNIST_REQUEST_PIXELS"

# The number type the served network computes in (read by ``pyfunc.load_context``): ``float32``
# (unset: the default, the answers of the model card), ``bfloat16``, or ``auto`` (bfloat16 where the
# device computes in it natively, float32 elsewhere). ``dtype_name`` parses it.
DTYPE_ENV = "MNIST_TORCH_DTYPE"
DTYPES = ("float32", "bfloat16", "auto")


def dtype_name(value: str | None) -> str:
    """``value`` (``DTYPE_ENV``'s) as one of ``DTYPES``: unset or empty is ``float32``; case and
    surrounding spaces do not matter. Raises ``ValueError`` naming the accepted values. Here,
    torch-free, so a command line can refuse a wrong value before any model loads."""
    name = (value or "float32").strip().lower()
    if name not in DTYPES:
        raise ValueError(f"{DTYPE_ENV} is {value!r}; expected one of {', '.join(DTYPES)}")
    return name


def dtype_problem(value: str | None) -> str | None:
    """Why ``value`` is no number type the model takes (``dtype_name``'s refusal); None when it is one."""
    try:
        dtype_name(value)
    except ValueError as exc:
        return str(exc)
    return None
