"""params.yaml parsing: typed, validated, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mirnet_pipeline.tasks.config import ConfigError, load_params, parse_params, variant_options

ROOT = Path(__file__).resolve().parents[1]


def checked_in(profile="research"):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["profile"] = profile
    return data


def test_the_checked_in_params_file_is_valid():
    params = parse_params(checked_in("research"))
    assert params.models["mirnet"].arch == "mirnet"
    assert variant_options(params.models["mirnet"]) == {
        "num_rrg": 3, "num_mrb": 2, "channels": 64, "skff_softmax": "channels", "non_local": False,
        "identity_init": False,
    }
    assert params.models["cnn256"].options.channels == 256
    assert params.models["cnn256"].options.depth == 6  # the builder's default
    assert params.mlflow.tracking_uri.startswith("sqlite:///")
    assert params.train.learning_rate == 1e-4 and params.train.epochs == 50


def test_the_demo_profile_overrides_the_research_settings():
    research, demo = parse_params(checked_in("research")), parse_params(checked_in("demo"))
    assert load_params(ROOT / "params.yaml").profile == "demo"  # the embedded default
    assert demo.models["mirnet"].options.channels == 16 and demo.models["mirnet"].options.num_rrg == 1
    assert demo.train.epochs == 2 and demo.shards.crop_size == 64
    # the demo starts the residual models at the identity; the research keeps the example's initialisation
    assert all(demo.models[m].options.identity_init for m in ("mirnet", "mirnet32", "mirnet_2x1", "mirnet_v2"))
    assert not any(research.models[m].options.identity_init for m in ("mirnet", "mirnet32", "mirnet_2x1", "mirnet_v2"))
    assert (research.train.loss, research.train.learning_rate) == ("mse", 1e-4)  # the research's settings
    assert demo.variant_train("cnn128").batch_size == 2 and research.variant_train("cnn128").batch_size == 8
    with pytest.raises(ConfigError, match="profile: unknown profile 'fast'"):
        parse_params(checked_in("fast"))


@pytest.mark.parametrize(
    "change, key, fragment",
    [
        (lambda d: d["models"]["mirnet"]["options"].update(channels="sixty-four"),
         "models.mirnet.options.channels", "valid integer"),
        (lambda d: d["models"]["mirnet"]["options"].update(chanels=64),
         "models.mirnet.options.chanels", "Extra inputs are not permitted"),
        (lambda d: d["models"]["cnn128"].update(arch="cnn3"),
         "models.cnn128", "'cnn3' found using 'arch' does not match any of the expected tags"),
        (lambda d: d["model_zoo"].update(height=-8),
         "model_zoo.height", "greater than 0"),
        (lambda d: d["mlflow"].update(tracking_url="x"),
         "mlflow.tracking_url", "Extra inputs are not permitted"),
        (lambda d: d["shards"].update(seed="abc"), "shards.seed", "valid integer"),
        (lambda d: d["train"].update(loss="mse+vgg"), "train.loss", "'mse+perceptual'"),
        (lambda d: d["train"]["perceptual"].update(weight=-1), "train.perceptual.weight", "greater than or equal"),
    ],
)
def test_a_bad_value_fails_with_a_message_naming_the_key(change, key, fragment):
    data = checked_in()
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_params(data)
    message = str(info.value)
    assert f"params.yaml: {key}:" in message
    assert fragment in message


def test_a_variant_overrides_single_perceptual_settings():
    data = checked_in()
    data["variants"]["mirnet"]["train"] = {"loss": "mse+perceptual", "perceptual": {"weight": 0.5}}
    params = parse_params(data)
    settings = params.variant_train("mirnet")
    assert settings.loss == "mse+perceptual" and settings.perceptual.weight == 0.5
    assert settings.perceptual.layers == params.train.perceptual.layers  # the rest from the defaults
    data["variants"]["mirnet"]["train"] = {"perceptual": {"wieght": 0.5}}
    with pytest.raises(ConfigError, match="variants.mirnet.train.perceptual.wieght"):
        parse_params(data)


def test_architecture_options_read_from_source_match_the_builders():
    import inspect

    from mirnet_pipeline.model import ARCHITECTURES as built
    from mirnet_pipeline.tasks.config import ARCHITECTURE_OPTIONS as declared

    assert set(declared) == set(built)
    for name, arch in built.items():
        signature = {k: p.default for k, p in arch.options().items() if k != "input_shape"}
        assert {k: default for k, (_, default) in declared[name].items()} == signature, name
        assert all(p.annotation is not inspect.Parameter.empty for p in arch.options().values())


def test_reading_params_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from mirnet_pipeline.tasks.config import load_params; load_params(); "
            "print(sorted(m for m in ('keras', 'tensorflow', 'mirnet_pipeline.model') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_params(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_params(broken)
