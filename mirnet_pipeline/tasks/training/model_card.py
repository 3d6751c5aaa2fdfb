"""What a registered model says about itself in MLflow: a description (what
the variant is for, its architecture and size, the data and split it was
trained on, the input it takes, and its figures against doing nothing),
written when the version is registered and again, with the evaluation's
figures, when it is evaluated."""

from __future__ import annotations

from mirnet_pipeline.tasks.config import Params, variant_options

ARCHITECTURES = {
    "mirnet": "MIRNet (Zamir et al. 2020): recursive residual groups of multi-scale residual blocks with dual "
              "attention and selective kernel feature fusion, and a global residual",
    "mirnet_v2": "MIRNet-v2 (Zamir et al. 2022): MIRNet with lighter, progressively downsampled multi-scale "
                 "blocks and context blocks",
    "cnn": "a plain convolutional network (the research's CNN baseline: no global residual, a ReLU output)",
}
PURPOSES = {
    "tid2013": "repairs the 24 distortion types of TID2013 (noise, blur, compression artefacts, colour, "
               "brightness and contrast changes, at 5 levels)",
    "lol": "brightens low-light photos (trained on LoL's low/normal-light pairs)",
}
INPUT = ("Input: float32 RGB images in [0, 1], shape (batch, height, width, 3), any height and width; "
         "output: the enhanced images, same shape and range. `mlflow.pyfunc.load_model(uri).predict(images)` "
         "runs it without this project's code; `mirnet-enhance` runs it over a folder or bucket.")


def describe(variant: str, params: Params, training: dict, evaluation: dict | None = None) -> str:
    """The markdown description of ``variant``'s registered version.
    ``training``: the training's final metrics (``reports/<variant>/metrics.json``);
    ``evaluation``: the evaluation's means ({dataset: {split: ...}}), when known."""
    spec = params.variants[variant]
    model = params.models[spec.model]
    options = ", ".join(f"{k}={v}" for k, v in variant_options(model).items())
    settings = params.variant_train(variant)
    crops = "random crops" if spec.input == "crops" else "whole images"
    lines = [
        f"**{variant}** {PURPOSES.get(spec.dataset, 'enhances images')}.",
        "",
        f"- Architecture: {ARCHITECTURES.get(model.arch, model.arch)}; `{model.arch}` with {options}; "
        f"{int(training.get('parameters', 0)):,} parameters.",
        f"- Trained on: the {spec.dataset} training split ({crops}), {training.get('epochs', '?')} epochs "
        f"at learning rate {settings.learning_rate:g} and batch size {settings.batch_size} "
        f"(profile `{params.profile}`); validated on the {spec.dataset} validation split.",
        f"- {INPUT}",
        f"- Training's last validation: PSNR {training.get('val_psnr', float('nan')):.2f} dB, "
        f"SSIM {training.get('val_ssim', float('nan')):.4f} "
        f"(on {'validation crops' if spec.input == 'crops' else 'whole validation images'}).",
    ]
    for dataset, splits in (evaluation or {}).items():
        for split, means in splits.items():
            lines.append(f"- Evaluated on {dataset} {split} ({means['images']} whole images): PSNR "
                         f"{means['input_psnr']:.2f} dB doing nothing → {means['output_psnr']:.2f} dB "
                         f"({means['psnr_gain']:+.2f} dB), SSIM {means['input_ssim']:.4f} → "
                         f"{means['output_ssim']:.4f}.")
    if evaluation is None:
        lines.append("- Not evaluated on whole images yet (the pipeline's evaluate stage adds the figures).")
    return "\n".join(lines)
