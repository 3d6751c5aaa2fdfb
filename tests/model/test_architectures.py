"""Architectures: parameter counts, layer structure and cost figures."""

from __future__ import annotations

import pytest

from mirnet_pipeline.model import build_model
from mirnet_pipeline.model.complexity import count_macs, describe


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def mirnet_parameters(num_rrg, num_mrb, c):
    """Closed-form parameter count of the Keras example's MIRNet, block by block."""
    def dau_(ch):
        return 2 * conv(3, ch, ch) + conv(1, ch, ch // 8) + conv(1, ch // 8, ch) + conv(1, 2, 1) + conv(1, 2 * ch, ch)

    def skff(ch):
        return conv(1, ch, ch // 8) + 3 * conv(1, ch // 8, ch)

    def down(ch):
        return conv(1, ch, ch) + conv(3, ch, ch) + 2 * conv(1, ch, 2 * ch)

    def up(ch):
        return conv(1, ch, ch) + conv(3, ch, ch) + 2 * conv(1, ch, ch // 2)

    mrb = (
        down(c) + down(2 * c)  # streams at 1/2 and 1/4
        + dau_(c) + dau_(2 * c) + dau_(4 * c)
        + up(2 * c) + up(4 * c) + up(2 * c) + skff(c)  # fusion at full resolution
        + down(c) + up(4 * c) + skff(2 * c)  # fusion at 1/2
        + down(c) + down(2 * c) + down(2 * c) + skff(4 * c)  # fusion at 1/4
        + dau_(c) + dau_(2 * c) + up(2 * c) + dau_(4 * c) + up(4 * c) + up(2 * c)
        + skff(c) + conv(3, c, c)
    )
    rrg = 2 * conv(3, c, c) + num_mrb * mrb
    return conv(3, 3, c) + num_rrg * rrg + conv(3, c, 3)


@pytest.mark.parametrize(
    "channels, expected",
    [(128, 744_963), (256, 2_964_483)],
)
def test_cnn_parameter_counts_match_the_research(channels, expected):
    model = build_model("cnn", channels=channels)
    assert model.count_params() == expected
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 7
    assert [c.activation.__name__ for c in convs] == ["relu"] * 7
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)


def test_cnn_depth_width_and_final_activation_are_configurable():
    model = build_model("cnn", channels=16, depth=3, final_activation="sigmoid")
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 4
    assert convs[-1].activation.__name__ == "sigmoid"
    assert model.count_params() == conv(3, 3, 16) + 2 * conv(3, 16, 16) + conv(3, 16, 3)


# The Keras example's mirnet_model(num_rrg=3, num_mrb=2, channels=64 / 32).
@pytest.mark.parametrize(
    "num_rrg, num_mrb, channels, expected",
    [(3, 2, 64, 44_157_007), (3, 2, 32, 11_059_295)],
)
def test_mirnet_parameter_counts(num_rrg, num_mrb, channels, expected):
    model = build_model("mirnet", num_rrg=num_rrg, num_mrb=num_mrb, channels=channels)
    assert model.count_params() == expected
    assert mirnet_parameters(num_rrg, num_mrb, channels) == expected


@pytest.mark.parametrize("num_rrg, num_mrb, channels", [(1, 1, 16), (2, 1, 8), (1, 3, 24)])
def test_mirnet_parameters_follow_the_block_structure_for_any_size(num_rrg, num_mrb, channels):
    model = build_model("mirnet", num_rrg=num_rrg, num_mrb=num_mrb, channels=channels)
    assert model.count_params() == mirnet_parameters(num_rrg, num_mrb, channels)


def test_mirnet_off_example_options_keep_or_add_parameters_as_documented():
    base = build_model("mirnet", num_rrg=1, num_mrb=1, channels=16).count_params()
    streams = build_model("mirnet", num_rrg=1, num_mrb=1, channels=16, skff_softmax="streams")
    assert streams.count_params() == base
    non_local = build_model("mirnet", num_rrg=1, num_mrb=1, channels=16, non_local=True)
    # one block on the quarter-resolution stream (64 channels, inner 32): theta, phi, g, w
    assert non_local.count_params() == base + 3 * (64 * 32 + 32) + (32 * 64 + 64)


def test_mirnet_v2_matches_the_paper_size_and_cost():
    model = build_model("mirnet_v2")
    # MIRNet-v2 paper, Table: 5.9M parameters, 140 GMACs for a 256x256 input
    assert model.count_params() == 5_858_560
    fixed = build_model("mirnet_v2", input_shape=(256, 256, 3))
    assert count_macs(fixed) / 1e9 == pytest.approx(140, rel=0.01)


def test_mirnet_v2_uses_the_official_group_schedule_and_shared_blocks():
    model = build_model("mirnet_v2")
    rcbs = [layer for layer in model.layers if layer.__class__.__name__ == "ResidualContextBlock"]
    assert [r.groups for r in rcbs] == [1] * 6 + [2] * 6 + [4] * 12
    # each contextual block is applied twice inside its multi-scale residual block
    assert all(len(r._inbound_nodes) == 2 for r in rcbs)


def test_cnn_macs_per_megapixel_are_exact():
    info = describe("cnn", channels=128)
    per_pixel = 3 * 9 * 128 + 5 * 128 * 9 * 128 + 128 * 9 * 3
    assert info["gmacs_per_megapixel"] == pytest.approx(per_pixel * 1e6 / 1e9)


def test_unknown_architecture_and_option_are_named():
    with pytest.raises(ValueError, match="unknown architecture 'mirnet3'"):
        build_model("mirnet3")
    with pytest.raises(TypeError, match="chanels"):
        build_model("mirnet", chanels=64)
