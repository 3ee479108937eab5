"""The study runner behind ``python -m experiments.study``; its public names are re-exported by
``experiments/study.py``, which documents the command.

One job per module, each using only those before it: ``spec`` (the data model), ``validate``
(reading a config file), ``state`` (what a workdir says about its cell), ``pool`` (the
subprocesses and signals), ``collect`` (workdirs into rows), ``summary`` (grouped statistics),
``markdown`` and ``plots`` (``summary.md``, the curves), ``report`` (the results folder) and
``cli`` (the command line). Importing this package loads none of them.
"""
