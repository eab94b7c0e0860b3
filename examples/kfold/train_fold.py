"""Train and validate one fold; run by orchestrate.py through run_multiple, or alone.

The fold comes from the config (``_fold_idx``), read with ``get_param``; metrics go to the
batch's database with ``log_metrics``. Run alone (``python train_fold.py``) it trains fold 0
and logs to ./xetrack_metrics.db.
"""

import numpy as np

from xetrack_c import get_experiment_id, get_param, get_seed, log_metrics

fold = get_param("_fold_idx", 0)
n_folds = get_param("n_folds", 5)
lr = get_param("model.lr", 0.1)
epochs = get_param("model.epochs", 20)
data_seed = get_param("data_seed", 0)

# The same synthetic data set in every fold (data_seed); this fold's own initial
# weights (the experiment's seed).
data_rng = np.random.default_rng(data_seed)
n_samples, n_features = 600, 8
true_w = data_rng.normal(size=n_features)
x = data_rng.normal(size=(n_samples, n_features))
y = x @ true_w + 0.1 * data_rng.normal(size=n_samples)

order = data_rng.permutation(n_samples)
val_idx = np.array_split(order, n_folds)[fold]
train_mask = np.ones(n_samples, dtype=bool)
train_mask[val_idx] = False
x_train, y_train, x_val, y_val = x[train_mask], y[train_mask], x[val_idx], y[val_idx]

seed = get_seed()
w = np.random.default_rng(seed if seed is not None else 0).normal(size=n_features)
for epoch in range(epochs):
    residual = x_train @ w - y_train
    w -= lr * 2 * x_train.T @ residual / len(y_train)
    log_metrics({"train_mse": float(np.mean(residual**2))}, step=epoch)

val_mse = float(np.mean((x_val @ w - y_val) ** 2))
log_metrics({"val_mse": val_mse, "fold": fold})
print(f"{get_experiment_id()}: fold {fold} val_mse={val_mse:.4f}")
