"""The training room: fitting a variant (``fit``), tracking it in MLflow
(``tracking``), loading a trained model from a file or the registry
(``trained_models``), evaluating it against doing nothing (``evaluation``),
promoting a candidate to champion (``promotion``) and the model-zoo report
(stages train, evaluate, model_zoo; the retraining flow)."""
