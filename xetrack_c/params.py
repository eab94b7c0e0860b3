"""The child API of ``run_multiple`` at its public path: read a task's config, log its metrics.

``from xetrack_c.params import get_param, log_metrics`` keeps working; the code lives in
:mod:`xetrack_c.run.child`. Importing this module loads that one and nothing else of the
runner.
"""

from xetrack_c.run.child import (  # noqa: F401  (re-exported)
    DEFAULT_METRICS_TABLE,
    STANDALONE_METRICS_DB,
    XETRACK_C_CONFIG,
    XETRACK_C_DB,
    XETRACK_C_EXPERIMENT_ID,
    XETRACK_C_EXPERIMENT_NAME,
    XETRACK_C_METRICS_TABLE,
    XETRACK_C_SEED,
    __all__,
    child_environment,
    get_experiment_id,
    get_experiment_name,
    get_param,
    get_params,
    get_seed,
    log_metrics,
    task_context,
)
