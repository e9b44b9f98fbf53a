"""Batch scoring: folders and tables of images, with pandas in-process or with Spark, and a watch mode.

Both engines call the same pyfunc ``predict`` as ``mlflow models serve`` (with per-row errors), so
a batch answer equals the online answer for the same image. The model alias is resolved once, at
the start, and the whole job is scored with that one version.
"""
