"""The work of each pipeline stage as plain, testable functions (no Prefect
here: a flow wraps what it calls as a ``@task`` where it wants retries or a
task run in the UI), one room
(sub-package) per part of the pipeline: ``tasks.data`` (fetch, index,
shards), ``tasks.training`` (fit, tracking, evaluation, promotion, model-zoo
report) and ``tasks.batch`` (batch enhancement); plus the modules every room
shares: configuration (``config``), where artefacts live (``artifacts``),
files written whole (``storage``), process settings (``environment``,
``runtime``) and the local services (``services``). Imports ``model``, never
``flows``."""
