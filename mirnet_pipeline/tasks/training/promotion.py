"""The quality gate of scheduled retraining: the registered model's
``candidate`` becomes ``champion`` only when it beats the current champion's
validation PSNR by a margin (the first candidate is promoted). The verdict is
recorded as tags on the candidate version and its MLflow run; a champion
that is replaced gets ``promotion=replaced by version N``, and a candidate
that already is the champion keeps its tags."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mirnet_pipeline.tasks.training.tracking import CANDIDATE, CHAMPION
from mirnet_pipeline.tasks.training.trained_models import logged_model_id


@dataclass
class Decision:
    model: str
    promoted: bool
    reason: str
    candidate_version: int
    candidate_psnr: float
    champion_version: int | None
    champion_psnr: float | None
    margin_db: float

    def as_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        champion = "none" if self.champion_version is None else (
            f"version {self.champion_version} ({self.champion_psnr:.3f} dB)")
        verdict = "**promoted**" if self.promoted else "**not promoted**"
        return (
            f"Model `{self.model}`: candidate version {self.candidate_version} "
            f"({self.candidate_psnr:.3f} dB validation PSNR) {verdict}.\n\n"
            f"- champion before: {champion}\n- margin required: {self.margin_db:.3f} dB\n"
            f"- reason: {self.reason}\n"
        )


def validation_psnr(client: MlflowClient, version, dataset: str) -> float:
    """The whole-image validation PSNR of a model version: the latest the
    evaluate flow linked to its logged model, else the figure on its training
    run (an evaluation logged there, or the last per-epoch validation PSNR)."""
    key = f"eval.{dataset}.validation.output_psnr"
    model_id = logged_model_id(version)
    if model_id is not None:
        linked = [m for m in client.get_logged_model(model_id).metrics or [] if m.key == key]
        if linked:
            return float(max(linked, key=lambda m: m.timestamp).value)
    metrics = client.get_run(version.run_id).data.metrics
    for name in (key, "final_val_psnr"):
        if name in metrics:
            return float(metrics[name])
    raise ValueError(f"model {version.name} version {version.version} has no validation PSNR ({key}); "
                     "run the evaluate flow")


def _alias(client: MlflowClient, model: str, alias: str):
    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def decide_and_promote(model: str, dataset: str, margin_db: float, client: MlflowClient | None = None) -> Decision:
    client = client or MlflowClient()
    candidate = _alias(client, model, CANDIDATE)
    if candidate is None:
        raise ValueError(f"registered model {model!r} has no {CANDIDATE!r} version; train it first")
    candidate_psnr = validation_psnr(client, candidate, dataset)
    champion = _alias(client, model, CHAMPION)
    champion_psnr = None if champion is None else validation_psnr(client, champion, dataset)
    if champion is None:
        promoted, reason = True, "first model: no champion yet"
    elif champion.version == candidate.version:
        promoted, reason = False, "the candidate already is the champion"
    elif candidate_psnr >= champion_psnr + margin_db:
        promoted, reason = True, (f"beats the champion by {candidate_psnr - champion_psnr:+.3f} dB "
                                  f"(>= {margin_db:.3f} dB)")
    else:
        promoted, reason = False, (f"beats the champion by only {candidate_psnr - champion_psnr:+.3f} dB "
                                   f"(< {margin_db:.3f} dB)")
    if promoted:
        client.set_registered_model_alias(model, CHAMPION, candidate.version)
    if champion is None or champion.version != candidate.version:
        # the verdict on this candidate; the champion's own tags stay as they are
        verdict = "promoted" if promoted else "refused"
        client.set_model_version_tag(model, candidate.version, "promotion", verdict)
        client.set_model_version_tag(model, candidate.version, "promotion.reason", reason)
        client.set_tag(candidate.run_id, "promotion", verdict)
        client.set_tag(candidate.run_id, "promotion.reason", reason)
    if promoted and champion is not None:
        client.set_model_version_tag(model, champion.version, "promotion",
                                     f"replaced by version {candidate.version}")
    return Decision(model, promoted, reason, int(candidate.version), candidate_psnr,
                    None if champion is None else int(champion.version), champion_psnr, margin_db)
