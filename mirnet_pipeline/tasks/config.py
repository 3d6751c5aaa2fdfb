"""The single configuration model: ``params.yaml`` parsed into typed, validated
pydantic models. Flows take these models as parameters.

Every error names the offending key as a dotted path, e.g.
``params.yaml: models.mirnet.options.channels: Input should be a valid integer``.
Unknown keys are errors too, so a typo never silently falls back to a default.
Every value is checked, the base settings and every profile's overrides
alike, not only the profile selected today; numbers must be finite, and no
value may carry credentials (``tasks.credentials``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mirnet_pipeline.tasks.credentials import WHERE, CredentialsInParameter, carries_credentials
from mirnet_pipeline.tasks.errors import UsageError

PARAMS_FILE = Path("params.yaml")
# the checkout this code runs from (where its params.yaml, mlflow.db and models live)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(UsageError):
    """A bad configuration value; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_credentials(cls, value):
        if isinstance(value, str) and (hidden := carries_credentials(value)) is not None:
            raise CredentialsInParameter(f"{hidden} carries credentials; {WHERE}")
        return value


def declared_architectures() -> dict[str, dict[str, tuple[Any, Any]]]:
    """{architecture: {option: (annotation, default)}} of every builder that the
    ``model`` package registers with ``@register_architecture``, read from its
    source with ``ast``, without importing it: importing it imports Keras and
    TensorFlow, seconds that checking params.yaml must not cost. The builder
    signatures stay the one place where options and defaults are written; a
    test checks this reading against ``model.ARCHITECTURES``."""
    package = importlib.util.find_spec("mirnet_pipeline.model")
    if package is None or not package.submodule_search_locations:
        raise ConfigError("the model package is not importable")
    found: dict[str, dict[str, tuple[Any, Any]]] = {}
    for file in sorted(Path(package.submodule_search_locations[0]).glob("*.py")):
        for node in ast.parse(file.read_text(), str(file)).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
                        and decorator.func.id == "register_architecture"):
                    arguments = node.args.args[len(node.args.args) - len(node.args.defaults):]
                    found[ast.literal_eval(decorator.args[0])] = {
                        a.arg: (_annotation(a.annotation), ast.literal_eval(d))
                        for a, d in zip(arguments, node.args.defaults, strict=True) if a.arg not in BUILD_ARGUMENTS
                    }
    return found


BUILD_ARGUMENTS = {"input_shape"}  # build-time details, not variant options
_ANNOTATION_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple, "None": None}


def _annotation(node) -> Any:
    if node is None:
        return Any
    return eval(ast.unparse(node), {"__builtins__": {}}, _ANNOTATION_NAMES)  # noqa: S307 (our own source)


def _spec_model(name: str, options: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    """A strict pydantic model of one architecture's builder options and defaults."""
    options_model = pydantic.create_model(
        f"{name}_options", __config__=ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False),
        **options
    )
    return pydantic.create_model(
        f"{name}_spec",
        __base__=Strict,
        arch=(Literal[name], ...),
        options=(options_model, options_model()),
    )


ARCHITECTURE_OPTIONS = declared_architectures()  # {architecture: {option: (type, default)}}

# One model variant: a registered architecture and its builder options, validated
# against the builder's signature (unknown options and wrong types are errors).
ModelSpec = Annotated[
    Union[tuple(_spec_model(name, options) for name, options in ARCHITECTURE_OPTIONS.items())],  # noqa: UP007
    Field(discriminator="arch"),
]


def variant_options(spec) -> dict[str, Any]:
    """All builder options of a variant, defaults filled in."""
    return spec.options.model_dump()


class MlflowSettings(Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "mirnet-pipeline"
    system_metrics_interval: float = Field(10.0, gt=0)  # seconds between samples


class ModelZooSettings(Strict):
    """The image size at which the model-zoo report counts MACs."""

    height: int = Field(1000, gt=0, multiple_of=4)
    width: int = Field(1000, gt=0, multiple_of=4)


class Source(Strict):
    """Where a dataset comes from: ``sample`` (the offline sample), an http(s)
    URL, an ``s3://bucket/key`` URI, or a local archive or folder."""

    source: str = "sample"
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    endpoint_url: str | None = None  # S3-compatible stores


class Tid2013Settings(Source):
    # reference numbers per split, as inclusive [first, last] ranges
    splits: dict[str, tuple[int, int]] = {"train": (1, 15), "validation": (21, 25), "test": (16, 20)}
    levels: list[Annotated[int, Field(ge=1, le=5)]] = [5]
    types: list[Annotated[int, Field(ge=1, le=24)]] | Literal["all"] = "all"

    @field_validator("splits")
    @classmethod
    def _disjoint(cls, splits):
        seen: dict[int, str] = {}
        for name, (first, last) in splits.items():
            if not 1 <= first <= last <= 25:
                raise ValueError(f"{name}: expected 1 <= first <= last <= 25, got [{first}, {last}]")
            for n in range(first, last + 1):
                if n in seen:
                    raise ValueError(f"reference {n} is in both {seen[n]!r} and {name!r}")
                seen[n] = name
        return splits

    def split_references(self) -> dict[str, list[int]]:
        return {name: list(range(a, b + 1)) for name, (a, b) in self.splits.items()}

    def type_numbers(self) -> list[int]:
        return list(range(1, 25)) if self.types == "all" else list(self.types)


class LolSettings(Source):
    train_count: int = Field(300, ge=1)  # the first N of our485 (sorted by name) train


class DataSettings(Strict):
    sample_seed: int = 0
    tid2013: Tid2013Settings = Tid2013Settings()
    lol: LolSettings = LolSettings()


class ShardSettings(Strict):
    crop_size: int = Field(128, ge=8)
    crops_per_pair: int = Field(8, ge=1)
    encoding: Literal["raw", "png"] = "raw"
    seed: int = 0
    target_shard_mb: float = Field(150, gt=0)


# The losses of model.losses.loss_names(), written out so that checking
# params.yaml does not import Keras (a test checks that the two agree)
LOSS_NAMES = ("mse", "mae", "charbonnier", "mse+perceptual", "mae+perceptual", "charbonnier+perceptual")


class PerceptualSettings(Strict):
    """The perceptual term of a ``<pixel>+perceptual`` loss: ``pixel + weight *
    perceptual``, perceptual being the mean squared difference of VGG19
    features in the units of the pixel MSE (model.losses.PerceptualLoss)."""

    weight: float = Field(0.01, ge=0)
    layers: list[str] = Field(["block2_conv2", "block3_conv4", "block4_conv4"], min_length=1)
    # imagenet (Keras' cache, ~/.keras/models, downloaded there by Keras where
    # there is internet), random (tests only) or the path of the weights file
    weights: str = "imagenet"


class TrainSettings(Strict):
    """Training defaults for every variant (a variant may override any of them)."""

    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)  # per replica; scaled by the number of GPUs
    epochs: int = Field(50, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # None: one pass over the shard set
    validation_steps: int | None = Field(None, ge=1)  # None: the whole validation set
    schedule: Literal["none", "plateau", "cosine"] = "plateau"
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=1)
    min_learning_rate: float = Field(1e-6, ge=0)
    loss: Literal[LOSS_NAMES] = "mse"  # type: ignore[valid-type]
    perceptual: PerceptualSettings = PerceptualSettings()
    clip_norm: float | None = Field(None, gt=0)
    early_stopping_patience: int | None = Field(None, ge=1)
    mixed_precision: Literal["auto", "on", "off"] = "auto"  # auto: on GPUs only
    xla: Literal["auto", "on", "off"] = "auto"  # auto: on GPUs only
    grid_images: int = Field(4, ge=1)
    seed: int = 42


class Variant(Strict):
    """One experiment: a model from ``models``, the dataset it trains on, crops
    or whole images, training overrides, and the datasets it is evaluated on."""

    model: str
    dataset: Literal["tid2013", "lol"] = "tid2013"
    input: Literal["crops", "full"] = "crops"
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate_on: list[Literal["tid2013", "lol"]] | None = None  # default: its own dataset


class FigureRow(Strict):
    """One row of the before/after figure: a variant on the first evaluated
    validation image of a distortion type (0: LoL's low light)."""

    variant: str
    dataset: Literal["tid2013", "lol"]
    distortion: int = Field(0, ge=0, le=24)


class EvaluateSettings(Strict):
    splits: list[Literal["validation", "test"]] = ["validation", "test"]
    # per split, for every dataset or per dataset ({tid2013: 24, lol: 64}); None:
    # all. Fewer than all are taken evenly across distortion types
    # (tasks.training.evaluation.balanced_order)
    max_images: Annotated[int, Field(ge=1)] | dict[str, Annotated[int, Field(ge=1)]] | None = None
    # rows of reports/evaluation/before_after.png; empty: each variant on its own dataset
    figure: list[FigureRow] = Field(default_factory=list)

    def images(self, dataset: str) -> int | None:
        """How many images of each split of ``dataset`` are evaluated (None: all)."""
        return self.max_images.get(dataset) if isinstance(self.max_images, dict) else self.max_images
    # PSNR the research reported per variant, as [low, high] on its own scale
    # (Keras example: max_val=255 on [0, 1] images, i.e. +48.13 dB)
    research_psnr: dict[str, tuple[float, float]] = Field(default_factory=dict)


class RetrainSettings(Strict):
    variant: str = "mirnet"
    margin_db: float = Field(0.1, ge=0)  # a candidate must beat the champion by this much
    cron: str = "0 3 * * 1"  # Mondays 03:00
    work_pool: str = "default"
    gpu_work_pool: str = "gpu"


class EnhanceSettings(Strict):
    """The batch-enhancement stage of the pipeline (a sample folder)."""

    source: str = "data/raw/lol/eval15/low"
    reference: str | None = "data/raw/lol/eval15/high"
    destination: str = "data/enhanced/lol_eval15"
    model: str = "models/mirnet_lol/model.keras"


class ExportSettings(Strict):
    """The export stage: which variants are written as SavedModel, ONNX and
    OpenVINO files (``exports/<variant>/``, verified against Keras), and their
    int8 model."""

    variants: list[str] = []  # params.yaml names them (the pipeline's: mirnet)
    formats: list[Literal["saved_model", "onnx", "openvino"]] = ["saved_model", "onnx", "openvino"]
    images_per_dataset: int = Field(4, ge=0)  # validation images of each prepared dataset to verify on
    int8: bool = True  # also an int8 model (model.int8.onnx), calibrated on crops of the variant's training shards
    calibration_crops: int = Field(300, ge=1)
    int8_validation_images: int | None = Field(None, ge=1)  # float32 and int8 scored on these; None: all


class Params(Strict):
    profile: str = "research"
    mlflow: MlflowSettings = MlflowSettings()
    data: DataSettings = DataSettings()
    shards: ShardSettings = ShardSettings()
    models: dict[str, ModelSpec]
    train: TrainSettings = TrainSettings()
    variants: dict[str, Variant] = Field(default_factory=dict)
    evaluate: EvaluateSettings = EvaluateSettings()
    retrain: RetrainSettings = RetrainSettings()
    enhance: EnhanceSettings = EnhanceSettings()
    export: ExportSettings = ExportSettings()
    model_zoo: ModelZooSettings = ModelZooSettings()

    @field_validator("models")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("at least one model variant is required")
        return value

    @model_validator(mode="after")
    def _variants_are_consistent(self):
        for name, variant in self.variants.items():
            if variant.model not in self.models:
                raise ValueError(
                    f"variants.{name}.model: unknown model {variant.model!r}; "
                    f"known: {', '.join(self.models)}"
                )
            try:
                self.variant_train(name)
            except pydantic.ValidationError as exc:
                problems = "; ".join(
                    f"variants.{name}.train.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(problems) from None
        for i, row in enumerate(self.evaluate.figure):
            if row.variant not in self.variants:
                raise ValueError(f"evaluate.figure.{i}.variant: unknown variant {row.variant!r}")
        for i, name in enumerate(self.export.variants):
            if name not in self.variants:
                raise ValueError(f"export.variants.{i}: unknown variant {name!r}")
        if self.variants and self.retrain.variant not in self.variants:
            raise ValueError(f"retrain.variant: unknown variant {self.retrain.variant!r}")
        return self

    def variant_train(self, name: str) -> TrainSettings:
        """The training settings of a variant: defaults with its overrides."""
        return TrainSettings.model_validate(deep_merge(self.train.model_dump(), self.variants[name].train))


def _format(exc: pydantic.ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "models" and loc[2] in ARCHITECTURE_OPTIONS:
            del loc[2]  # the union's tag: the architecture, already given by the "arch" key
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        got = error.get("input")
        secret = isinstance(error.get("ctx", {}).get("error"), CredentialsInParameter)  # never echoed
        shown = "" if isinstance(got, dict) or secret or error["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {key}: {message}{shown}")
    return "\n".join(lines)


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, mappings recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(data: dict, source: str = "params.yaml") -> dict:
    """Merge ``profiles[profile]`` over the base settings. The base settings are
    the research's; a profile (``demo``) overrides some of them."""
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    profile = data.get("profile", "research")
    if profile == "research" and "research" not in profiles:
        return data
    if profile not in profiles:
        known = ", ".join(["research", *profiles]) if "research" not in profiles else ", ".join(profiles)
        raise ConfigError(f"{source}: profile: unknown profile {profile!r}; known: {known}")
    return deep_merge(data, profiles[profile] or {})


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    """Validate the base settings and each profile's, and return the selected
    profile's; raise ``ConfigError`` naming each bad key (and the profile
    whose overrides hold it). A value a profile overrides is checked all the
    same: it is what the base settings, or another profile, would run with."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    selected = apply_profile(data, source)
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: profiles: expected a mapping of profile names to overrides")
    base = {key: value for key, value in data.items() if key not in ("profile", "profiles")}
    checks = [(base, source)] + [(apply_profile({**data, "profile": name}, source), f"{source} (profile {name})")
                                 for name in profiles]
    for settings, label in checks:
        _validated(settings, label)
    return _validated(selected, source)


def _validated(data: dict, label: str) -> Params:
    try:
        return Params.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_format(exc, label)) from None


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read and validate ``params.yaml`` (or ``path``)."""
    path = Path(path or PARAMS_FILE)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(data, source=str(path))


def absolute_tracking_uri(uri: str, root: Path) -> str:
    """``uri`` with a relative SQLite path (``sqlite:///mlflow.db``) made absolute against ``root``."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((root / uri.removeprefix("sqlite:///")).resolve())
    return uri


def project_tracking_uri() -> str | None:
    """The project's own MLflow store (``mlflow.tracking_uri`` of its params.yaml,
    a relative SQLite path read from the project's folder), whatever the working
    directory; None where the code does not run from a checkout."""
    params_file = PROJECT_ROOT / "params.yaml"
    if not params_file.is_file():
        return None
    return absolute_tracking_uri(load_params(params_file).mlflow.tracking_uri, PROJECT_ROOT)
